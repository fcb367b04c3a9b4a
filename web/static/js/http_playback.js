// What the watch page's HTTP players (HlsPlayback, DashPlayback) share: the callbacks, "played" once
// the first frame shows, a short record of the library's errors, and taking the video element back.

export class HttpPlayback {
  constructor(video, url, { onError = () => {}, onLevels = () => {}, onPlaying = () => {} } = {}) {
    this.video = video;
    this.url = url;
    this.onError = onError;
    this.onLevels = onLevels; // gets [{value, label}] once the renditions are known
    this.onPlaying = onPlaying; // the first frame is showing
    this.played = false;
    this.stopped = false;
    this.errors = []; // the last errors the library reported, [seconds since start, details, fatal]: why it stalls
    this.startedAt = performance.now();
    this.playing = () => {
      if (this.stopped) return;
      this.played = true;
      this.onPlaying();
    };
  }

  noteError(detail, fatal) {
    this.errors.push([Math.round(performance.now() - this.startedAt) / 1000, detail, fatal]);
    if (this.errors.length > 20) this.errors.shift();
  }

  /** Stops listening and leaves the video element empty; subclasses destroy their library first. */
  stop() {
    this.stopped = true;
    this.video.removeEventListener("playing", this.playing);
    this.video.removeAttribute("src");
    this.video.load();
  }
}
