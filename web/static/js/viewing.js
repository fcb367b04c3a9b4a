// One viewing as its player sees it: time to the first frame, time the picture moved, stalls, the delay
// behind the broadcaster, dropped frames and time per rendition (by picture height). Told to the server
// at the first frame, every 10 s, and once at the end, with navigator.sendBeacon so the last one goes
// out even as the page closes. Each beacon carries the viewing's totals so far: one lost loses nothing.
// For HLS the beacons also count the player among the stream's viewers (a CDN hides its requests).

const BEAT_MS = 10_000;
const TICK_MS = 1000;

/** A random id kept for the page: the viewer of its viewings (nothing that names the person). */
const pageViewer = crypto.randomUUID();

export class Viewing {
  constructor(video, { channel, transport, whepSession = null, latency = async () => null, asked = performance.now() }) {
    this.video = video;
    this.path = `/api/channels/${encodeURIComponent(channel)}/watching`;
    this.id = crypto.randomUUID();
    this.transport = transport;
    this.whepSession = whepSession;
    this.latency = latency; // seconds behind, or null
    this.asked = asked;
    this.startupMs = null;
    this.watchMs = 0;
    this.stalls = 0;
    this.stallMs = 0;
    this.stalledAt = null;
    this.renditions = {};
    this.lastTick = null;
    this.ended = false;
    this.onWaiting = () => {
      if (this.startupMs !== null && this.stalledAt === null && !this.video.paused) {
        this.stalls += 1;
        this.stalledAt = performance.now();
      }
    };
    this.onPlaying = () => this.unstall();
    video.addEventListener("waiting", this.onWaiting);
    video.addEventListener("playing", this.onPlaying);
  }

  /** The first frame is showing: beacons from now on. */
  started() {
    if (this.startupMs !== null || this.ended) return;
    this.startupMs = Math.round(performance.now() - this.asked);
    this.lastTick = performance.now();
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.beatNow();
    this.beat = setInterval(() => this.beatNow(), BEAT_MS);
  }

  unstall() {
    if (this.stalledAt !== null) {
      this.stallMs += performance.now() - this.stalledAt;
      this.stalledAt = null;
    }
  }

  tick() {
    const now = performance.now();
    const spent = now - this.lastTick;
    this.lastTick = now;
    const v = this.video;
    if (v.paused || this.stalledAt !== null || v.readyState < 3) return;
    this.watchMs += spent;
    if (v.videoHeight) {
      const name = `${v.videoHeight}p`;
      this.renditions[name] = (this.renditions[name] || 0) + spent / 1000;
    }
  }

  beatNow() {
    this.latency().catch(() => null).then((latency) => {
      if (!this.ended) this.send(false, latency);
    });
  }

  send(leaving, latency = null) {
    const quality = this.video.getVideoPlaybackQuality?.();
    const body = {
      session: this.id,
      viewer: pageViewer,
      transport: this.transport,
      leaving,
      watch_seconds: round(this.watchMs / 1000),
      stalls: this.stalls,
      stall_seconds: round(this.stallMs / 1000),
      dropped_frames: quality ? quality.droppedVideoFrames : 0,
      renditions: Object.fromEntries(Object.entries(this.renditions).slice(0, 12).map(([k, s]) => [k, round(s)])),
    };
    if (this.startupMs !== null) body.startup_ms = Math.min(this.startupMs, 600_000);
    if (typeof latency === "number" && latency >= 0) body.latency_ms = Math.min(Math.round(latency * 1000), 600_000);
    if (this.whepSession) body.whep_session = this.whepSession;
    const blob = new Blob([JSON.stringify(body)], { type: "application/json" });
    if (!navigator.sendBeacon?.(this.path, blob)) {
      fetch(this.path, { method: "POST", body: blob, keepalive: true, headers: { "Content-Type": "application/json" } })
        .catch(() => null);
    }
  }

  /** The viewing is over (the player stops or moves to the other transport): its last beacon. */
  end() {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.ticker);
    clearInterval(this.beat);
    this.video.removeEventListener("waiting", this.onWaiting);
    this.video.removeEventListener("playing", this.onPlaying);
    if (this.startupMs === null) return; // never showed a frame: not a viewing
    this.unstall();
    this.tick();
    this.send(true);
  }
}

function round(seconds) {
  return Math.round(seconds * 10) / 10;
}
