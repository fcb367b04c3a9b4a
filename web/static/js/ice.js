// The configuration a peer connection starts with: the site's STUN/TURN servers, TURN with
// short-lived credentials. Relay candidates are gathered before the offer goes out, so a browser whose
// network lets nothing else through (strict firewalls, symmetric NATs) still connects.
import { api } from "./api.js";

let kept = null; // { configuration, until }: credentials are reused for half their life

/** An RTCConfiguration; host candidates only when the server cannot be asked. */
export async function rtcConfiguration() {
  if (kept && performance.now() < kept.until) return kept.configuration;
  try {
    // Never wait long: without an answer the page connects with host candidates (or falls back).
    const answer = await Promise.race([
      api("GET", "/api/ice-servers"),
      new Promise((_, reject) => setTimeout(() => reject(new Error("no answer in 3 s")), 3000)),
    ]);
    const configuration = {
      iceServers: answer.ice_servers.map(({ urls, username, credential }) =>
        (username ? { urls, username, credential } : { urls })),
      iceTransportPolicy: answer.ice_transport_policy,
    };
    const life = answer.expires_in ?? 3600;
    kept = { configuration, until: performance.now() + (life * 1000) / 2 };
    return configuration;
  } catch (error) {
    console.warn("no ICE servers (host candidates only):", error);
    return {};
  }
}
