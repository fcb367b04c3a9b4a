// A channel's analytics for its owner: the figures of a period and its concurrent viewers drawn with uPlot.

import uPlot from "/vendor/uplot/uPlot.esm.js";
import { api, tokens } from "./api.js";
import { clock, when } from "./format.js";
import { el, renderNav, say } from "./nav.js";

const $ = (id) => document.getElementById(id);
const channel = decodeURIComponent(location.pathname.split("/")[2] || "");
const streamId = channel ? new URLSearchParams(location.search).get("stream") : null; // one stream's report
let chart = null;

/** Seconds as "3 h 20 min" (long) or "m:ss" (short). */
function watchTime(seconds) {
  if (seconds < 3600) return clock(seconds);
  const hours = Math.floor(seconds / 3600);
  return `${hours} h ${Math.round((seconds % 3600) / 60)} min`;
}

/** The site's busiest channels (the admins' view). */
function drawBusiest(busiest) {
  $("busiest-panel").hidden = false;
  $("busiest").tBodies[0].replaceChildren(...busiest.map((b) => el("tr", {},
    el("td", {}, el("a", { href: `/analytics/${encodeURIComponent(b.channel)}` }, `@${b.channel}`)),
    el("td", {}, watchTime(b.watch_seconds)),
    el("td", {}, String(b.peak_concurrent)))));
}

/** Sessions, viewers and how the viewings went (the players' own figures). */
function drawViewing(v) {
  const none = "–";
  $("unique-viewers").textContent = String(v.unique_viewers);
  $("sessions").textContent = `${v.sessions.webrtc + v.sessions.hls} (WebRTC ${v.sessions.webrtc}, HLS ${v.sessions.hls})`;
  $("average-session").textContent = watchTime(v.average_session_seconds);
  const byTransport = (ms) => {
    const known = [["WebRTC", ms.webrtc], ["HLS", ms.hls]].filter(([, value]) => value !== null && value !== undefined);
    return known.length ? known.map(([label, value]) => `${label} ${(value / 1000).toFixed(2)} s`).join(" · ") : none;
  };
  $("startup").textContent = byTransport(v.startup_ms);
  $("rebuffering").textContent = v.rebuffering_ratio === null ? none : `${(v.rebuffering_ratio * 100).toFixed(1)} %`;
  $("latency").textContent = byTransport(v.latency_ms);
  $("dropped-frames").textContent = String(v.dropped_frames);
  const shares = Object.entries(v.renditions).sort((a, b) => b[1] - a[1]);
  $("renditions").textContent = shares.length
    ? shares.map(([name, share]) => `${name} ${Math.round(share * 100)} %`).join(", ") : none;
}

/** The channel's last streams, each a link to its own report. */
async function drawStreams() {
  const streams = await api("GET", `/api/channels/${encodeURIComponent(channel)}/streams?limit=20`);
  $("streams-panel").hidden = streams.items.length === 0;
  $("stream-list").tBodies[0].replaceChildren(...streams.items.map((s) => el("tr", {},
    el("td", {}, when(s.started_at)),
    el("td", {}, s.ended_at ? watchTime(s.duration) : "live now"),
    el("td", {}, String(s.peak_viewers)),
    el("td", {}, el("a", { href: `/analytics/${encodeURIComponent(channel)}?stream=${encodeURIComponent(s.id)}` },
      "Details")))));
}

function draw(report) {
  $("analytics-heading").textContent = !channel ? "Site analytics"
    : report.stream ? `Analytics · @${report.channel} · stream of ${when(report.since)}` : `Analytics · @${report.channel}`;
  if (report.busiest) drawBusiest(report.busiest);
  $("peak-concurrent").textContent = String(report.peak_concurrent);
  $("average-concurrent").textContent = report.average_concurrent.toFixed(1);
  $("watch-total").textContent = watchTime(report.watch_seconds.total);
  $("watch-webrtc").textContent = watchTime(report.watch_seconds.webrtc);
  $("watch-hls").textContent = watchTime(report.watch_seconds.hls);
  $("streams").textContent = String(report.streams);
  $("live-time").textContent = watchTime(report.live_seconds);
  $("chat-messages").textContent = String(report.chat_messages);
  $("chatters").textContent = String(report.chatters);
  $("new-followers").textContent = String(report.new_followers);
  drawViewing(report.viewing);

  const box = $("audience-chart");
  chart?.destroy();
  chart = null;
  $("chart-empty").hidden = report.minutes.length > 0;
  if (!report.minutes.length) return;
  const span = report.resolution === "day" ? 86400 : 60;
  $("chart-caption").textContent = report.resolution === "day"
    ? "Concurrent viewers: each day's peak" : "Concurrent viewers per minute";
  const times = report.minutes.map((m) => Date.parse(m.minute) / 1000);
  const data = [times, report.minutes.map((m) => m.webrtc), report.minutes.map((m) => m.hls)];
  const style = getComputedStyle(document.documentElement);
  chart = new uPlot({
    width: Math.max(280, box.clientWidth),
    height: 280,
    scales: {
      // A few minutes' stream must not stretch over years: a point's span either side of what there is.
      x: { time: true, range: () => [times[0] - span, times[times.length - 1] + span] },
      y: { range: (u, min, max) => [0, Math.max(1, max)] },
    },
    axes: [{ stroke: style.color }, { stroke: style.color, label: "viewers" }],
    series: [
      {},
      { label: "WebRTC", stroke: "#c62828", width: 2 },
      { label: "HLS", stroke: "#1565c0", width: 2 },
    ],
  }, data, box);
}

async function load() {
  const days = $("period").value;
  try {
    const path = !channel ? `/api/analytics?days=${days}`
      : streamId ? `/api/channels/${encodeURIComponent(channel)}/streams/${encodeURIComponent(streamId)}/analytics`
        : `/api/channels/${encodeURIComponent(channel)}/analytics?days=${days}`;
    const report = await api("GET", path);
    $("analytics").hidden = false; // first: the chart takes the width the page gives it
    draw(report);
    $("analytics-status").hidden = true;
  } catch (error) {
    $("analytics").hidden = true;
    const whose = channel ? "the channel's owner (or an admin)" : "admins";
    say($("analytics-status"), error.status === 403 ? `Only ${whose} can see these analytics.`
      : error.status === 401 ? "Sign in to see your channel's analytics." : error.message);
  }
}

async function downloadCsv() {
  const days = $("period").value;
  const response = await fetch(`/api/channels/${encodeURIComponent(channel)}/analytics.csv?days=${days}`,
    { headers: { Authorization: `Bearer ${tokens().access}` } });
  if (!response.ok) {
    say($("analytics-status"), "The CSV could not be made; reload the page and try again.");
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${channel}-analytics-${days}d.csv`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function main() {
  await renderNav();
  $("period").addEventListener("change", load);
  $("download-csv").addEventListener("click", downloadCsv);
  $("download-csv").hidden = !channel; // the minutes of one channel
  if (streamId) {
    $("period-controls").hidden = true;
    $("stream-back").hidden = false;
    $("all-streams").href = `/analytics/${encodeURIComponent(channel)}`;
  } else if (channel) {
    drawStreams().catch(() => null);
  }
  window.addEventListener("resize", () => chart?.setSize({ width: Math.max(280, $("audience-chart").clientWidth), height: 280 }));
  await load();
}

await main();
document.body.dataset.ready = "true";
