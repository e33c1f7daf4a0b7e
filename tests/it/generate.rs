//! `cloudlake generate`: synthetic data with the real dataset's shape runs through the pipeline.

use crate::run;

#[tokio::test]
async fn generated_data_has_the_real_shape_and_flaw_rates() {
    let landing = tempfile::tempdir().unwrap();
    let g = cloudlake::generate::generate(1, landing.path(), 11).unwrap();
    assert_eq!((g.events, g.orgs), (43_200, 80));
    let lake = tempfile::tempdir().unwrap();
    let r = run(landing.path(), lake.path()).await.unwrap();
    let b = |s: &str| r.bronze.iter().find(|m| m.source == s).unwrap().clone();
    assert_eq!((b("usage_events").read, b("usage_events").written), (43_200, 43_200));
    assert_eq!(b("billing_monthly").written, 240);
    // Every generated reference resolves, and reconciliation passed (or run would have failed).
    let ev = r.silver.iter().find(|m| m.table == "usage_events").unwrap();
    let v = |rule: &str| ev.rules.iter().find(|o| o.rule == rule).unwrap().violations;
    assert_eq!((v("usage_events.org_exists"), v("usage_events.resource_exists")), (0, 0));
    // Flaw rates near the real data's: 211 costs below -0.01, 7,335 early events, 2,033 imputed units.
    assert!(
        (150..=280).contains(&v("usage_events.cost_not_negative")),
        "{}",
        v("usage_events.cost_not_negative")
    );
    assert!((6_000..=9_000).contains(&v("usage_events.after_resource_created")));
    let imputed = ev.imputed.iter().find(|(c, _)| c == "unit_imputed").unwrap().1;
    assert!((1_700..=2_400).contains(&imputed), "{imputed}");
    let bill = r.silver.iter().find(|m| m.table == "billing_monthly").unwrap();
    let bv = |rule: &str| bill.rules.iter().find(|o| o.rule == rule).unwrap().violations;
    assert!(bv("billing_monthly.usd_rate_is_one") > 100 && bv("billing_monthly.subtotal_not_negative") > 0);
    assert_eq!(r.reconciliation.len(), 7);
}
