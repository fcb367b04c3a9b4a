// DASH playback: dash.js (from npm, served at /vendor/dashjs/) in low-latency mode, for the watch page's
// ?playback=dash and a PLAYBACK_ORDER that names DASH. The same interface as HlsPlayback. Loaded only
// when a viewer needs it.

import { HttpPlayback } from "./http_playback.js";

const MANIFEST_ERRORS = new Set([10, 11, 25, 31, 32]); // loading, parsing, downloading it; nothing in it
const SEGMENT_ERRORS = new Set([17, 18, 27]); // a media segment that could not be loaded

export class DashPlayback extends HttpPlayback {
  constructor(video, url, callbacks = {}) {
    super(video, url, callbacks);
    this.player = null;
    this.levels = []; // representation ids, in the order of the quality menu
  }

  async start() {
    const { default: dashjs } = await import("/vendor/dashjs/dash.mediaplayer.min.js");
    if (this.stopped) return; // stopped while dash.js was loading
    if (!window.MediaSource && !window.ManagedMediaSource) throw new Error("this browser plays neither WebRTC nor DASH");
    this.video.addEventListener("playing", this.playing);
    const player = dashjs.MediaPlayer().create();
    this.player = player;
    player.updateSettings({
      debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
      streaming: {
        // The MPD's ServiceDescription sets the target latency and the catch-up rates.
        liveCatchup: { enabled: true },
        buffer: { bufferTimeAtTopQuality: 4, bufferTimeDefault: 4, bufferToKeep: 20 },
        retryAttempts: { MPD: 8 }, // the ladder starts on the first request: the MPD can take a few seconds
        retryIntervals: { MPD: 1000 },
      },
    });
    const events = dashjs.MediaPlayer.events;
    player.on(events.STREAM_INITIALIZED, () => {
      const representations = player.getRepresentationsByType("video");
      // The menu's values index this list of ids: dash.js's own list can change order later.
      this.levels = representations.map((r) => r.id);
      this.onLevels(representations.map((r, index) => ({
        value: String(index),
        label: r.height ? `${Math.min(r.width || r.height, r.height)}p` : `${Math.round(r.bandwidth / 1000)} kbit/s`,
      })));
    });
    player.on(events.ERROR, (event) => {
      const error = event.error || {};
      const detail = error.message || String(error.code || "error");
      // A segment that failed to load (after dash.js's own retries) costs a skip, not the playback:
      // dash.js goes on with the next. The manifest, the init segment or the media source failing
      // does end it.
      const fatal = !SEGMENT_ERRORS.has(error.code);
      this.noteError(detail, fatal);
      if (!fatal) return;
      // A manifest that cannot be loaded: the channel is not live (the player says "offline").
      const manifest = MANIFEST_ERRORS.has(error.code);
      this.onError(manifest ? `manifestLoadError: ${detail}` : detail);
    });
    player.on(events.PLAYBACK_ENDED, () => {
      if (!this.stopped) this.onError("manifestLoadError: the stream ended");
    });
    player.initialize(this.video, this.url, true);
  }

  /** Play rendition `index`; -1 for automatic. Done by bounding dash.js's ABR to that rendition's
   * bit rate, which it applies from the next segment it loads (a manual switch was not always taken
   * under load). */
  setLevel(index) {
    if (!this.player) return;
    const id = this.levels[index];
    const chosen = index >= 0 ? this.player.getRepresentationsByType("video").find((r) => r.id === id) : null;
    const kbps = chosen ? chosen.bandwidth / 1000 : -1;
    this.player.updateSettings({ streaming: { abr: {
      minBitrate: { video: chosen ? kbps * 0.999 : -1 },
      maxBitrate: { video: chosen ? kbps * 1.001 : -1 },
    } } });
  }

  /** The rendition playing: {index, height}, `index` in the list the quality menu was made from. */
  get level() {
    const current = this.player?.getCurrentRepresentationForType("video");
    if (!current) return null;
    return { index: this.levels.indexOf(current.id), height: current.height || 0 };
  }

  /** Seconds between the newest media and what is shown (dash.js's own figure, on the UTCTiming clock). */
  get latency() {
    const seconds = this.player?.getCurrentLiveLatency();
    return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
  }

  stop() {
    if (this.player) this.player.destroy();
    this.player = null;
    super.stop();
  }
}
