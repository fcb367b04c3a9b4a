// The studio's stream health while live, from wherever the stream comes (this page, OBS over WHIP or
// RTMP): the server's samples of the last minutes drawn as small live graphs (video bitrate, frame
// rate, keyframe interval, packets missing, viewers), and what looks wrong said in plain words. When
// this page publishes, its own round trip to the server is drawn too (the browser measures it).

import uPlot from "/vendor/uplot/uPlot.esm.js";
import { api } from "./api.js";

const POLL_MS = 2000; // while live
const IDLE_POLL_MS = 10_000; // while nothing arrives
const RTT_KEPT = 150;
const CHARTS = [
  { key: "video_kbps", label: "Video", unit: "kbit/s" },
  { key: "fps", label: "Frame rate", unit: "fps" },
  { key: "keyframe_interval", label: "Keyframe interval", unit: "s" },
  { key: "loss_percent", label: "Packets missing", unit: "%" },
  { key: "rtt_ms", label: "Round trip", unit: "ms", local: true },
  { key: "viewers", label: "Viewers", unit: "" },
];

/** Unix seconds as the wall clock's "14:05:30": the charts span minutes, not days. */
function clockTime(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export class IngestPanel {
  constructor(root, channel) {
    this.root = root;
    this.channel = channel;
    this.charts = new Map();
    this.rtt = []; // [unix seconds, ms] measured by this page while it publishes
    this.timer = null;
    this.box = root.querySelector(".ingest-charts");
    this.warnings = root.querySelector(".ingest-warnings");
    this.ok = root.querySelector(".ingest-ok");
  }

  start() {
    this.poll();
    window.addEventListener("resize", () => this.resize());
    window.addEventListener("pagehide", () => this.stop());
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** This page's own round trip to the server (WebRTC's candidate pair), in ms. */
  localRtt(ms) {
    this.rtt.push([Date.now() / 1000, ms]);
    if (this.rtt.length > RTT_KEPT) this.rtt.shift();
  }

  async poll() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    let live = false;
    try {
      const ingest = await api("GET", `/api/channels/${encodeURIComponent(this.channel)}/ingest`);
      live = ingest.live;
      this.draw(ingest);
    } catch (error) {
      if (error.status === 401 || error.status === 403 || error.status === 404) return; // signed out: no more
    }
    if (!this.stopped) this.timer = setTimeout(() => this.poll(), live ? POLL_MS : IDLE_POLL_MS);
  }

  draw(ingest) {
    this.root.hidden = !ingest.live;
    if (!ingest.live) {
      this.rtt = [];
      return;
    }
    const said = [...ingest.warnings];
    const lastRtt = this.rtt.at(-1);
    if (lastRtt && Date.now() / 1000 - lastRtt[0] < 10 && lastRtt[1] > 300) {
      said.push(`The round trip to the server takes ${Math.round(lastRtt[1])} ms: a closer server or a wired `
        + "connection will keep the delay down.");
    }
    this.warnings.replaceChildren(...said.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
    this.ok.hidden = said.length > 0;
    this.root.dataset.warnings = String(said.length);
    const times = ingest.samples.map((s) => Date.parse(s.at) / 1000);
    for (const chart of CHARTS) {
      const data = chart.local
        ? [this.rtt.map(([t]) => t), this.rtt.map(([, v]) => v)]
        : [times, ingest.samples.map((s) => s[chart.key])];
      this.chart(chart, data);
    }
  }

  chart(spec, data) {
    let held = this.charts.get(spec.key);
    if (!held) {
      if (!data[0].length) return; // nothing to draw (the round trip when OBS publishes)
      const figure = document.createElement("figure");
      figure.className = "ingest-chart";
      figure.dataset.key = spec.key;
      const caption = document.createElement("figcaption");
      const value = document.createElement("span");
      value.className = "ingest-value";
      caption.append(`${spec.label} `, value);
      const plot = document.createElement("div");
      figure.append(caption, plot);
      this.box.append(figure);
      const style = getComputedStyle(document.documentElement);
      const u = new uPlot({
        width: this.width(),
        height: 110,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: true }, y: { range: (self, min, max) => [0, Math.max(1, max * 1.15)] } },
        axes: [
          { stroke: style.color, size: 24, ticks: { show: false }, values: (self, ticks) => ticks.map(clockTime) },
          { stroke: style.color, size: 44 },
        ],
        series: [{}, { stroke: "#c62828", width: 2, fill: "rgba(198, 40, 40, 0.08)" }],
      }, data, plot);
      held = { u, value };
      this.charts.set(spec.key, held);
    } else {
      held.u.setData(data);
    }
    const last = data[1].at(-1);
    held.value.textContent = last === undefined ? "" : `${Number.isInteger(last) ? last : last.toFixed(1)} ${spec.unit}`.trim();
  }

  width() {
    return Math.max(200, Math.min(360, (this.box.clientWidth || 600) / 2 - 16));
  }

  resize() {
    for (const { u } of this.charts.values()) u.setSize({ width: this.width(), height: 110 });
  }
}
