// Foresight console: live filtering, periodic refresh and the plots. Everything else is
// server-rendered; pages work without this file, minus plots and refresh.
"use strict";

(function () {
  // Rows of a table filtered as you type, without a round trip; the filter is kept in
  // the URL so that a refresh or a shared link shows the same rows.
  function liveFilter(form) {
    const table = document.querySelector(form.dataset.liveFilter);
    const input = form.querySelector("input[type=search]");
    if (!table || !input) return;
    const apply = () => {
      const needle = input.value.trim().toLowerCase();
      for (const row of table.tBodies[0].rows) {
        row.hidden = needle !== "" && !row.dataset.filter.toLowerCase().includes(needle);
      }
      const url = new URL(location.href);
      if (needle === "") url.searchParams.delete("q"); else url.searchParams.set("q", input.value);
      history.replaceState(null, "", url);
    };
    input.addEventListener("input", apply);
    apply();
  }

  // Pages marked data-refresh reload their content in place every so many seconds.
  function autoRefresh(main) {
    const every = Number(main.dataset.refresh) * 1000;
    if (!every) return;
    setInterval(async () => {
      if (document.hidden) return;
      const active = document.activeElement;
      if (active && active.tagName === "INPUT" && main.contains(active)) return;
      try {
        const r = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
        if (r.redirected || !r.ok) { if (r.redirected) location.reload(); return; }
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const fresh = doc.getElementById("main");
        if (fresh) { main.replaceChildren(...fresh.childNodes); init(main); }
      } catch (e) {
        // The service is restarting; the next tick tries again.
      }
    }, every);
  }

  function legend(template, metric) {
    if (!template) {
      const parts = Object.entries(metric).filter(([k]) => k !== "__name__").map(([k, v]) => `${k}=${v}`);
      return parts.join(", ") || "value";
    }
    return template.replace(/\{(\w+)\}/g, (_, k) => metric[k] ?? "");
  }

  function formatValue(unit, v) {
    if (v == null) return "–";
    if (unit === "ratio") return (v * 100).toFixed(1) + " %";
    if (unit === "seconds") return v >= 120 ? (v / 60).toFixed(1) + " min" : v.toFixed(0) + " s";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v * 100) / 100);
  }

  const palette = ["#d9480f", "#1971c2", "#2f9e44", "#9c36b5", "#e67700", "#0c8599", "#c2255c", "#5c940d"];
  const charts = new Map();

  async function drawChart(el, rangeSecs) {
    const queries = JSON.parse(el.dataset.queries);
    const end = Math.floor(Date.now() / 1000);
    const start = end - rangeSecs;
    const step = Math.max(15, Math.ceil(rangeSecs / 240));
    const series = [];
    for (const { q, legend: tpl } of queries) {
      const url = `/api/v1/query_range?query=${encodeURIComponent(q)}&start=${start}&end=${end}&step=${step}`;
      const r = await fetch(url, { credentials: "same-origin" });
      if (!r.ok) throw new Error(`${r.status} from the query API`);
      const body = await r.json();
      for (const s of body.data.result) {
        series.push({ label: legend(tpl, s.metric), values: s.values });
      }
    }
    const times = [...new Set(series.flatMap(s => s.values.map(v => v[0])))].sort((a, b) => a - b);
    const index = new Map(times.map((t, i) => [t, i]));
    const data = [times];
    let points = 0;
    for (const s of series) {
      const col = new Array(times.length).fill(null);
      for (const [t, v] of s.values) { col[index.get(t)] = Number(v); points++; }
      data.push(col);
    }
    if (charts.has(el)) { charts.get(el).destroy(); charts.delete(el); }
    el.replaceChildren();
    el.dataset.points = String(points);
    if (points === 0) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "No data in this range.";
      el.append(p);
      return;
    }
    const unit = el.dataset.unit;
    const opts = {
      width: Math.max(280, el.clientWidth),
      height: 200,
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: palette[i % palette.length], width: 1.5,
        value: (u, v) => formatValue(unit, v),
      }))],
      axes: [{}, { values: (u, vals) => vals.map(v => formatValue(unit, v)), size: 60 }],
      scales: { y: unit === "ratio" ? { range: [0, 1] } : { range: (u, min, max) => [Math.min(0, min), Math.max(1, max)] } },
      legend: { live: true },
    };
    charts.set(el, new uPlot(opts, data, el));
  }

  function drawCharts(root) {
    const select = document.getElementById("range");
    const range = select ? Number(select.value) : 3600;
    for (const el of root.querySelectorAll(".chart[data-queries]")) {
      drawChart(el, range).catch(e => {
        el.dataset.points = "0";
        el.textContent = `The plot could not be drawn: ${e.message}`;
      });
    }
  }

  function init(root) {
    for (const f of root.querySelectorAll("form[data-live-filter]")) liveFilter(f);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const main = document.getElementById("main");
    if (!main) return;
    init(main);
    autoRefresh(main);
    if (typeof uPlot !== "undefined") {
      drawCharts(main);
      const select = document.getElementById("range");
      if (select) select.addEventListener("change", () => drawCharts(main));
    }
  });
})();
