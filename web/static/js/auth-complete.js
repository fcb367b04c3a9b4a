// The end of a provider sign-in: the server put the tokens in the fragment (never sent to servers).

import { safeNext, storeTokens } from "./api.js";
import { el, renderNav, say } from "./nav.js";

const fragment = new URLSearchParams(location.hash.slice(1));
// Take the tokens out of the address bar (and so out of history) before anything else.
history.replaceState(null, "", location.pathname);

const access_token = fragment.get("access_token");
const refresh_token = fragment.get("refresh_token");
if (access_token && refresh_token) {
  storeTokens({ access_token, refresh_token });
  location.replace(safeNext(fragment.get("next")));
} else {
  const status = document.getElementById("complete-status");
  say(status, "The sign-in did not finish: no tokens arrived. ");
  status.append(el("a", { href: "/login" }, "Try again"));
  document.querySelector("h1").textContent = "Sign-in failed";
  renderNav();
}
