//! `silver_users`: the current version of each user, conformed and checked.

use super::SilverTable;
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "users.user_id_present",
        check: "user_id IS NOT NULL AND user_id <> ''",
        action: Quarantine,
        reason: "a user needs a user_id",
    },
    Rule {
        id: "users.org_exists",
        check: "__org_known",
        action: Quarantine,
        reason: "org_id is not in customers_orgs",
    },
    Rule {
        id: "users.email_format",
        check: "regexp_like(email, '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$')",
        action: Warn,
        reason: "email is not a valid address",
    },
    Rule {
        id: "users.last_login_after_created",
        check: "last_login IS NULL OR created_at IS NULL OR last_login >= created_at",
        action: Warn,
        reason: "last_login is before created_at",
    },
];

fn select() -> String {
    format!(
        "SELECT {user_id} AS user_id, {org_id} AS org_id, lower(trim(u.email)) AS email, lower(trim(u.role)) AS role,
            u.active, u.created_at, u.last_login, u.source_file, u.source_line, u.record_hash,
            o.org_id IS NOT NULL AS __org_known
        FROM {current} u
        LEFT JOIN silver_orgs_current o ON o.org_id = {org_id}",
        user_id = super::conform::code("u.user_id"),
        org_id = super::conform::code("u.org_id"),
        current = super::current_version("bronze_users", "user_id"),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "users",
    bronze: "users",
    select,
    rules: RULES,
    partitions: &[],
    version_key: Some("lower(trim(user_id))"),
};
