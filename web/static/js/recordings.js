// Recordings: the list on a channel's page, and formatting shared with the playback page.

import { api } from "./api.js";
import { clock as duration } from "./format.js";
import { el } from "./nav.js";

export { duration };


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
  // One still being recorded is the live stream itself: the page shows that already.
  const shown = page.items.filter((recording) => recording.state !== "recording");
  list.replaceChildren(...shown.map(item));
  return shown.length;
}
