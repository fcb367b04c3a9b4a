// Glass-to-glass barcode (TESTING.md): the sender paints the wall clock, in milliseconds, into the
// top of each canvas frame as black and white squares; the receiver reads them back from each decoded
// frame and subtracts from its own clock. Both pages run on one machine, so one clock.
//
// Layout of a 1280x720 frame: three rows of sixteen 80x80 squares across the top. Rows one and two
// hold the 32 low bits of the time, row three the complement of the low 16 as a check, so a frame
// caught mid-update or smeared by the encoder reads as invalid rather than as a wrong number. Below,
// a moving pattern keeps the encoder busy like a real picture would.

(() => {
  const W = 1280;
  const H = 720;
  const CELL = 80;
  const COLS = 16;

  function bits(value) {
    const low = value & 0xffff;
    const out = [];
    for (let i = 0; i < 32; i += 1) out.push((value >>> i) & 1);
    for (let i = 0; i < 16; i += 1) out.push(((~low) >>> i) & 1);
    return out;
  }

  function nowMs() {
    return Math.round(performance.timeOrigin + performance.now());
  }

  /** Start painting; returns the canvas whose captureStream() is published. */
  function paint() {
    const canvas = document.createElement("canvas");
    canvas.width = W;
    canvas.height = H;
    const ctx = canvas.getContext("2d");
    let frame = 0;
    const draw = () => {
      frame += 1;
      ctx.fillStyle = `hsl(${(frame * 3) % 360} 40% 35%)`;
      ctx.fillRect(0, 3 * CELL, W, H - 3 * CELL);
      ctx.fillStyle = "#ddd";
      for (let i = 0; i < 24; i += 1) {
        const x = (frame * 7 + i * 97) % W;
        const y = 3 * CELL + 20 + ((i * 53 + frame * 3) % (H - 3 * CELL - 60));
        ctx.fillRect(x, y, 40, 40);
      }
      const code = bits(nowMs() >>> 0);
      for (let i = 0; i < code.length; i += 1) {
        ctx.fillStyle = code[i] ? "#fff" : "#000";
        ctx.fillRect((i % COLS) * CELL, Math.floor(i / COLS) * CELL, CELL, CELL);
      }
    };
    draw();
    setInterval(draw, 1000 / 30);
    return canvas;
  }

  /** Read every decoded frame of `video` for `seconds`; resolves to {latencies, frames, invalid}. */
  function measure(video, seconds) {
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const latencies = [];
    let frames = 0;
    let invalid = 0;
    return new Promise((resolve) => {
      const end = performance.now() + seconds * 1000;
      const onFrame = (now, meta) => {
        const glass = Math.round(performance.timeOrigin + (meta.expectedDisplayTime || now));
        const w = video.videoWidth;
        const h = video.videoHeight;
        if (canvas.width !== w || canvas.height !== h) {
          canvas.width = w;
          canvas.height = h;
        }
        ctx.drawImage(video, 0, 0, w, h);
        const cell = (CELL * w) / W; // the picture may arrive scaled down
        const image = ctx.getImageData(0, 0, w, Math.ceil(3 * cell)).data;
        const read = [];
        for (let i = 0; i < 48; i += 1) {
          const x = Math.floor(((i % COLS) + 0.5) * cell);
          const y = Math.floor((Math.floor(i / COLS) + 0.5) * cell);
          const p = (y * w + x) * 4;
          read.push(image[p] + image[p + 1] + image[p + 2] > 3 * 128 ? 1 : 0);
        }
        let value = 0;
        for (let i = 31; i >= 0; i -= 1) value = value * 2 + read[i];
        let check = true;
        for (let i = 0; i < 16; i += 1) if (read[32 + i] === read[i]) check = false;
        frames += 1;
        const latency = (glass - value) % 2 ** 32;
        if (check && latency >= 0 && latency < 10000) latencies.push(latency);
        else invalid += 1;
        if (performance.now() < end) video.requestVideoFrameCallback(onFrame);
        else resolve({ latencies, frames, invalid });
      };
      video.requestVideoFrameCallback(onFrame);
    });
  }

  /** A 440 Hz tone as a track: with audio, the receiver holds video back to keep lips in sync. */
  function tone() {
    const audio = new AudioContext();
    const oscillator = audio.createOscillator();
    const out = audio.createMediaStreamDestination();
    oscillator.connect(out);
    oscillator.start();
    return out.stream.getAudioTracks()[0];
  }

  window.barcode = { paint, measure, tone };
})();
