// The admin dashboard's shared code: the token, polling, and uPlot charts (vendor/uPlot.iife.min.js,
// a global `uPlot`). The admin token comes from ?token= (the hub prints this URL at startup); it is
// sent as a bearer header and kept in links between the dashboard's pages, never stored.
"use strict";

const rhub = (() => {
  const token = new URLSearchParams(location.search).get("token");
  const $ = (id) => document.getElementById(id);
  const charts = {}; // name -> uPlot, also read by the browser test
  window.rhubCharts = charts;

  function state(s, text) {
    $("conn").dataset.state = s;
    $("conn-text").textContent = text;
  }

  function notice(text, bad) {
    const n = $("notice");
    n.hidden = !text;
    n.className = bad ? "notice bad" : "notice";
    n.textContent = text || "";
  }

  // GET a JSON admin endpoint; null (and the page says why) when refused
  async function get(path) {
    const r = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    if (r.status === 401) {
      notice("The hub refused this admin token. Open the URL the hub printed at startup (/admin?token=…).", true);
      state("closed", "Unauthorized");
      return null;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return r.json();
  }

  // call `tick` now and every `ms` after it settles; a failure shows "Retrying" and keeps polling
  function poll(tick, ms) {
    if (!token) {
      notice("Add ?token=<admin token> to the URL (the hub prints it at startup).");
      state("closed", "No token");
      return;
    }
    const run = async () => {
      let again = true;
      try {
        again = (await tick()) !== false;
        if (again) state("live", `Live · ${new Date().toLocaleTimeString()}`);
      } catch (e) {
        state("reconnecting", `Retrying… (${e.message})`);
      }
      if (again) setTimeout(run, ms);
    };
    run();
  }

  function width(el) {
    return Math.max(280, el.clientWidth - 4);
  }

  // a line chart over time; `series` = [{label, stroke, scale?, bars?}], data = [t[], ...ys[]]
  function timeChart(name, el, series, data, opts = {}) {
    if (charts[name]) {
      charts[name].setData(data);
      return charts[name];
    }
    const bars = uPlot.paths.bars({ size: [0.8, 40] });
    const u = new uPlot(
      {
        width: width(el),
        height: opts.height || 190,
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: true }, ...(opts.scales || {}) },
        axes: [{}, { size: 60, label: opts.yLabel || "" }, ...(opts.axes || [])],
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: s.stroke,
            fill: s.fill,
            width: 1.5,
            scale: s.scale || "y",
            spanGaps: !!s.spanGaps,
            paths: s.bars ? bars : s.points ? () => null : undefined,
            points: s.points ? { show: true, size: 9, stroke: s.stroke, fill: s.stroke } : { show: false },
          })),
        ],
      },
      data,
      el,
    );
    charts[name] = u;
    return u;
  }

  // a histogram as bars: bucket i is labelled with its upper bound ("≤ 5", the last "> 3600")
  function histChart(name, el, label, dist, stroke) {
    const n = dist.counts.length;
    const xs = [...Array(n).keys()];
    const names = dist.bounds.map((b) => `≤ ${b}`).concat([`> ${dist.bounds[dist.bounds.length - 1]}`]);
    const data = [xs, dist.counts];
    if (charts[name]) {
      charts[name].setData(data);
      return charts[name];
    }
    const u = new uPlot(
      {
        width: width(el),
        height: 190,
        legend: { show: true },
        scales: { x: { time: false, range: [-0.5, n - 0.5] } },
        axes: [
          { values: (u, ticks) => ticks.map((t) => names[t] ?? ""), space: 34, rotate: 0, gap: 4 },
          { size: 50 },
        ],
        series: [
          { label: "bucket", value: (u, v) => (v == null ? "–" : names[v]) },
          {
            label,
            stroke,
            fill: stroke + "55",
            paths: uPlot.paths.bars({ size: [0.8, 60] }),
            points: { show: false },
          },
        ],
      },
      data,
      el,
    );
    charts[name] = u;
    return u;
  }

  window.addEventListener("resize", () => {
    for (const u of Object.values(charts)) u.setSize({ width: width(u.root.parentElement), height: u.height });
  });

  function fmtBytes(v) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function fmtAge(s) {
    s = Math.floor(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function streamLink(id) {
    const a = document.createElement("a");
    a.href = `/admin/stream?id=${encodeURIComponent(id)}&token=${encodeURIComponent(token)}`;
    a.textContent = id;
    return a;
  }

  return { token, $, charts, get, poll, state, notice, timeChart, histChart, fmtBytes, fmtAge, cell, streamLink };
})();
