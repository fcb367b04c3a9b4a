// HLS playback for the fallback: hls.js (from npm, served at /vendor/hls.js/) in low-latency mode, or
// the browser's own HLS (Safari). Loaded only when a viewer needs it.

import { HttpPlayback } from "./http_playback.js";

export class HlsPlayback extends HttpPlayback {
  constructor(video, url, callbacks = {}) {
    super(video, url, callbacks);
    this.hls = null;
  }

  async start() {
    const { default: Hls } = await import("/vendor/hls.js/hls.mjs");
    if (this.stopped) return; // stopped while hls.js was loading
    this.video.addEventListener("playing", this.playing);
    if (Hls.isSupported()) {
      const hls = new Hls({
        lowLatencyMode: true,
        maxLiveSyncPlaybackRate: 1.5, // after a stall, play faster until back at the target latency
        backBufferLength: 30,
        enableWorker: true,
        // The ladder starts on the first request: the multivariant can take a few seconds to come.
        manifestLoadPolicy: {
          default: {
            maxTimeToFirstByteMs: Infinity,
            maxLoadTimeMs: 20000,
            timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
            errorRetry: { maxNumRetry: 6, retryDelayMs: 1000, maxRetryDelayMs: 4000 },
          },
        },
      });
      this.hls = hls;
      hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
        this.onLevels(data.levels.map((level, index) => ({
          // Named by the short side, as the ladder names them (a portrait 360×640 is "360p").
          value: String(index),
          label: level.height ? `${Math.min(level.width || level.height, level.height)}p` : `${Math.round(level.bitrate / 1000)} kbit/s`,
        })));
      });
      hls.on(Hls.Events.ERROR, (_, data) => {
        this.noteError(data.details || data.type, Boolean(data.fatal));
        if (!data.fatal) return;
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
        else this.onError(data.details || data.type);
      });
      hls.loadSource(this.url);
      hls.attachMedia(this.video);
    } else if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
      this.video.src = this.url;
    } else {
      throw new Error("this browser plays neither WebRTC nor HLS");
    }
    // Not awaited: the first segment of a ladder that starts on demand can take seconds.
    this.video.play().catch(() => null);
  }

  /** Play rendition `index`; -1 for automatic (hls.js only). */
  setLevel(index) {
    // For what is loaded next, keeping what is buffered: switching at once (currentLevel, or nextLevel,
    // which may flush what is ahead) empties the buffer, stalls, and hls.js then adds a second to its
    // target latency for good.
    if (this.hls) this.hls.loadLevel = index;
  }

  /** The rendition playing: {index, height} (hls.js only). */
  get level() {
    if (!this.hls || this.hls.currentLevel < 0) return null;
    return { index: this.hls.currentLevel, height: this.hls.levels[this.hls.currentLevel]?.height || 0 };
  }

  /** Seconds between the newest media and what is shown (hls.js only). */
  get latency() {
    return this.hls ? this.hls.latency : null;
  }

  stop() {
    if (this.hls) this.hls.destroy();
    this.hls = null;
    super.stop();
  }
}
