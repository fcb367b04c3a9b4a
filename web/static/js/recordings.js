// Recordings: the list on a channel's page, and formatting shared with the playback page.

import { api } from "./api.js";
import { el } from "./nav.js";

export function duration(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

export const STATE_TEXT = {
  recording: "Recording now",
  processing: "Being prepared",
  ready: "",
  failed: "Failed",
};

function item(recording) {
  const picture = recording.thumbnail_url
    ? el("img", { class: "recording-thumb", src: recording.thumbnail_url, alt: "", loading: "lazy" })
    : el("span", { class: "recording-thumb recording-thumb-empty", "aria-hidden": "true" });
  const when = new Date(recording.started_at).toLocaleString();
  const meta = recording.state === "ready" ? duration(recording.duration) : STATE_TEXT[recording.state];
  return el("li", { class: "recording", dataset: { id: String(recording.id), state: recording.state } },
    el("a", { href: `/recordings/${recording.id}` },
      picture,
      el("span", { class: "recording-title" }, recording.title || `Stream of ${when}`),
      el("span", { class: "muted recording-meta" }, `${when} · ${meta}`)));
}

// Fills `list` with the channel's recordings (newest first); returns how many there are.
export async function showRecordings(list, channel) {
  const page = await api("GET", `/api/channels/${encodeURIComponent(channel)}/recordings?limit=24`, undefined, { auth: false });
  list.replaceChildren(...page.items.map(item));
  return page.items.length;
}
