// cloudlake dashboard: the query endpoints of `cloudlake serve`, drawn with Chart.js.
//
// The API key comes from the URL fragment (`#key=...`, kept out of server logs) or the form, and
// is kept in this browser's localStorage. Every list is read page by page (next_cursor).
// `window.cloudlake` exposes the charts and a render counter (also `data-renders` on <body>)
// so a headless browser can check what is drawn.
"use strict";

const state = { key: null, renders: 0, charts: {} };
window.cloudlake = state;

const COLORS = ["#2f6fde", "#e0822b", "#2fa36b", "#9b59b6", "#c0392b", "#16a2b8", "#7f8c8d", "#d4ac0d", "#34495e", "#e84393"];
const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

function readKey() {
  const m = location.hash.match(/key=([^&]+)/);
  if (m) {
    localStorage.setItem("cloudlake.key", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return localStorage.getItem("cloudlake.key");
}

async function api(path, params) {
  const rows = [];
  let cursor = null;
  do {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v) q.set(k, v);
    q.set("limit", "1000");
    if (cursor) q.set("cursor", cursor);
    const res = await fetch(`${path}?${q}`, { headers: state.key ? { Authorization: `Bearer ${state.key}` } : {} });
    const body = await res.json().catch(() => ({ error: res.statusText }));
    if (res.status === 401 || res.status === 403) {
      $("keyform").hidden = false;
      throw new Error(body.error || "API key refused");
    }
    if (!res.ok) throw new Error(body.error || res.statusText);
    rows.push(...body.rows);
    cursor = body.next_cursor;
  } while (cursor);
  return rows;
}

function chart(id, config) {
  const existing = state.charts[id];
  if (existing) {
    existing.data = config.data;
    existing.options = config.options;
    existing.update();
    return existing;
  }
  state.charts[id] = new Chart($(id), config);
  return state.charts[id];
}

const num = (v) => (v === null || v === undefined ? null : Number(v));

async function render() {
  const org = $("org").value;
  const from = $("from").value;
  const to = $("to").value;
  setStatus("loading…");
  try {
    const [usage, anomalies, top, tickets, revenue, genai] = await Promise.all([
      api("/api/v1/queries/daily-usage", { org, from, to }),
      api("/api/v1/queries/anomalies", { org, from, to }),
      api("/api/v1/queries/top-services", { org, to, top: "10" }),
      api("/api/v1/queries/critical-tickets", { org, to }),
      api("/api/v1/queries/revenue", { org, from, to }),
      api("/api/v1/queries/genai-tokens", { org, from, to }),
    ]);

    const dates = [...new Set(usage.map((r) => r.usage_date))].sort();
    const services = [...new Set(usage.map((r) => r.service))].sort();
    const cost = new Map(usage.map((r) => [`${r.usage_date}|${r.service}`, num(r.cost_usd)]));
    const flagged = new Set(anomalies.map((r) => `${r.usage_date}|${r.service}`));
    chart("cost", {
      type: "line",
      data: {
        labels: dates,
        datasets: services.map((s, i) => ({
          label: s,
          data: dates.map((d) => cost.get(`${d}|${s}`) ?? null),
          borderColor: COLORS[i % COLORS.length],
          pointRadius: dates.map((d) => (flagged.has(`${d}|${s}`) ? 6 : 0)),
          pointBackgroundColor: dates.map((d) => (flagged.has(`${d}|${s}`) ? "#d62728" : COLORS[i % COLORS.length])),
          spanGaps: true,
        })),
      },
      options: { animation: false, scales: { y: { title: { display: true, text: "USD" } } } },
    });
    chart("top", {
      type: "bar",
      data: { labels: top.map((r) => r.service), datasets: [{ label: "cost, last 14 days (USD)", data: top.map((r) => num(r.cost_usd)), backgroundColor: "#2f6fde" }] },
      options: { animation: false, indexAxis: "y" },
    });
    chart("tickets", {
      type: "bar",
      data: {
        labels: tickets.map((r) => r.ticket_date),
        datasets: [
          { label: "critical tickets", data: tickets.map((r) => r.critical_tickets), backgroundColor: "#e0822b", yAxisID: "y", maxBarThickness: 40 },
          { label: "SLA breach rate", data: tickets.map((r) => num(r.sla_breach_rate)), type: "line", borderColor: "#c0392b", pointRadius: 4, yAxisID: "rate" },
        ],
      },
      options: { animation: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, rate: { position: "right", min: 0, max: 1 } } },
    });
    const critical = tickets.reduce((a, r) => a + r.critical_tickets, 0);
    const breaches = tickets.reduce((a, r) => a + r.sla_breaches, 0);
    $("sla").textContent = critical
      ? `${critical} critical tickets, ${breaches} SLA breaches: breach rate ${((100 * breaches) / critical).toFixed(1)} %`
      : "No critical tickets in the last 30 days.";
    chart("revenue", {
      type: "bar",
      data: {
        labels: revenue.map((r) => r.month.slice(0, 7)),
        datasets: [
          { label: "revenue (USD)", data: revenue.map((r) => num(r.revenue_usd)), backgroundColor: "#2fa36b" },
          { label: "credits (USD)", data: revenue.map((r) => num(r.credits_usd)), backgroundColor: "#7f8c8d" },
          { label: "taxes (USD)", data: revenue.map((r) => num(r.taxes_usd)), backgroundColor: "#d4ac0d" },
        ],
      },
      options: { animation: false },
    });
    chart("genai", {
      type: "bar",
      data: {
        labels: genai.map((r) => r.usage_date),
        datasets: [
          { label: "tokens", data: genai.map((r) => r.total_tokens), backgroundColor: "#9b59b6", yAxisID: "y" },
          { label: "GenAI cost (USD)", data: genai.map((r) => num(r.genai_cost_usd)), type: "line", borderColor: "#16a2b8", yAxisID: "usd" },
        ],
      },
      options: { animation: false, scales: { usd: { position: "right" } } },
    });
    state.renders += 1;
    document.body.dataset.renders = String(state.renders);
    document.body.dataset.org = org;
    setStatus(`${org}: ${usage.length} usage rows, ${anomalies.length} anomalies`);
  } catch (e) {
    setStatus(e.message, true);
    document.body.dataset.error = e.message;
  }
}

async function start() {
  state.key = readKey();
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem("cloudlake.key", $("key").value.trim());
    location.reload();
  });
  try {
    const orgs = await api("/api/v1/orgs", {});
    const select = $("org");
    for (const o of orgs) {
      const opt = document.createElement("option");
      opt.value = o.org_id;
      opt.textContent = `${o.org_name} (${o.org_id})`;
      select.appendChild(opt);
    }
  } catch (e) {
    setStatus(e.message, true);
    document.body.dataset.error = e.message;
    return;
  }
  for (const id of ["org", "from", "to"]) $(id).addEventListener("change", render);
  await render();
}

start();
