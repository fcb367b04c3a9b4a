// Sign up, then log in with the same password and go where `?next=` says (the settings page by default).

import { api, currentUser, logIn, safeNext } from "./api.js";
import { busy, clearErrors, renderNav, showErrors } from "./nav.js";

const form = document.getElementById("signup-form");
const formError = document.getElementById("form-error");
const given = new URLSearchParams(location.search).get("next");
const next = safeNext(given, "/settings");
if (given) document.getElementById("login-link").href = `/login?next=${encodeURIComponent(next)}`;

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form, formError);
  const username = form.elements.username.value.trim();
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  await busy(form, async () => {
    try {
      const user = await api("POST", "/api/auth/register", { username, email, password }, { auth: false });
      await logIn(user.username, password);
      location.assign(next);
    } catch (error) {
      showErrors(form, formError, error);
      const first = form.querySelector("[aria-invalid]");
      if (first) first.focus();
    }
  });
});
// The button waits for this script (disabled in the page): submitted before it, the browser would have
// sent the form itself, the password in the address.
form.querySelector("button[type=submit]").disabled = false;

// Signed in already: nothing to sign up for.
if (await currentUser().catch(() => null)) {
  location.replace(next);
} else {
  await renderNav();
  document.body.dataset.ready = "true";
}
