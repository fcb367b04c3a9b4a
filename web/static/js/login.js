// Log in with a password or an OpenID Connect provider; `?next=` says where to go afterwards.

import { api, currentUser, logIn, safeNext } from "./api.js";
import { busy, clearErrors, el, renderNav, say, showErrors } from "./nav.js";

const form = document.getElementById("login-form");
const formError = document.getElementById("form-error");
const next = safeNext(new URLSearchParams(location.search).get("next"));
if (next !== "/") document.getElementById("signup-link").href = `/signup?next=${encodeURIComponent(next)}`;

// A failed provider sign-in comes back as /login#error=<message>.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.has("error")) {
  say(formError, fragment.get("error") || "signing in with the provider failed");
  history.replaceState(null, "", location.pathname + location.search);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form, formError);
  const username = form.elements.username.value.trim();
  const password = form.elements.password.value;
  await busy(form, async () => {
    try {
      await logIn(username, password);
      location.assign(next);
    } catch (error) {
      showErrors(form, formError, error);
    }
  });
});
// The button waits for this script (disabled in the page): submitted before it, the browser would have
// sent the form itself, the password in the address.
form.querySelector("button[type=submit]").disabled = false;

async function showProviders() {
  let providers = [];
  try {
    providers = (await api("GET", "/api/auth/providers", undefined, { auth: false })).items;
  } catch {
    return; // password login still works
  }
  if (!providers.length) return;
  const query = next === "/" ? "" : `?next=${encodeURIComponent(next)}`;
  document.getElementById("provider-list").replaceChildren(
    ...providers.map((p) =>
      el("li", {},
        el("a", { class: "button button-secondary button-block provider", href: p.login_url + query, dataset: { provider: p.name } },
          `Continue with ${p.display_name}`),
      ),
    ),
  );
  document.getElementById("providers").hidden = false;
}

// Signed in already: go on to where the link meant to go (unless a provider's sign-in just failed).
if (!fragment.has("error") && (await currentUser().catch(() => null))) {
  location.replace(next);
} else {
  await renderNav();
  await showProviders();
  document.body.dataset.ready = "true";
}
