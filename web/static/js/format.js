// Small helpers the pages share: times, tags, copying to the clipboard.

import { say } from "./nav.js";

/** Seconds as m:ss or h:mm:ss. */
export function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/** "a, b c" -> ["a", "b", "c"], lowercased. */
export function parseTags(text) {
  return text.split(/[,\s]+/).map((t) => t.trim().toLowerCase()).filter(Boolean);
}

/** Show a short confirmation in `box` for four seconds. */
export function flash(box, message) {
  say(box, message, "ok");
  clearTimeout(box.timer);
  box.timer = setTimeout(() => say(box, ""), 4000);
}

/** Copy `text`; without clipboard permission, select `selectable` so Ctrl+C copies it. */
export async function copyText(text, status, selectable) {
  try {
    await navigator.clipboard.writeText(text);
    flash(status, "Copied");
  } catch {
    // No clipboard permission (an insecure origin, a policy): select it for Ctrl+C instead.
    if (selectable instanceof HTMLInputElement) {
      selectable.focus();
      selectable.select();
    } else {
      const range = document.createRange();
      range.selectNodeContents(selectable);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
    flash(status, "Selected: press Ctrl+C (or ⌘C) to copy");
  }
}

/** A start time the way people read it: "Sat 5 Dec, 18:00" in their own time zone. */
export function when(iso) {
  return new Date(iso).toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

/** How long ago: "just now", "5 min ago", "3 h ago", then the date. */
export function ago(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return when(iso);
}
