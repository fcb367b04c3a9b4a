// WHIP and WHEP from the browser: one offer with all candidates, one POST, the answer; DELETE to end.

/** A problem from a WHIP/WHEP endpoint, with its status and Retry-After (seconds) when given. */
export class SessionError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // host candidates are enough to start; no server trickles to us
  });
}

/** Offer, POST it to `url`, apply the answer. Returns {location, etag}. */
export async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 1500);
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { method: "POST", headers, body: pc.localDescription.sdp });
  if (response.status !== 201) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      // not a problem document
    }
    const retry = Number(response.headers.get("Retry-After")) || null;
    throw new SessionError(response.status, detail, retry);
  }
  const answer = await response.text();
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  const location = new URL(response.headers.get("Location"), new URL(url, window.location.href)).toString();
  return { location, etag: response.headers.get("ETag") };
}

/** End a session (best effort: the server also notices silence). */
export async function hangUp(location) {
  if (!location) return;
  try {
    await fetch(location, { method: "DELETE", keepalive: true });
  } catch {
    // the page may be going away
  }
}

/** Put the codecs whose mime type is `mimeType` first on a transceiver (the others stay as fallback). */
export function preferCodec(transceiver, mimeType) {
  if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const codecs = RTCRtpReceiver.getCapabilities(transceiver.receiver.track.kind)?.codecs || [];
  const wanted = codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  const rest = codecs.filter((c) => c.mimeType.toLowerCase() !== mimeType.toLowerCase());
  if (wanted.length) transceiver.setCodecPreferences([...wanted, ...rest]);
}
