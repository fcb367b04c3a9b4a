// Sign up, then log in with the same password and go to the settings page.

import { api, logIn } from "./api.js";
import { busy, clearErrors, renderNav, showErrors } from "./nav.js";

const form = document.getElementById("signup-form");
const formError = document.getElementById("form-error");

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
      location.assign("/settings");
    } catch (error) {
      showErrors(form, formError, error);
      const first = form.querySelector("[aria-invalid]");
      if (first) first.focus();
    }
  });
});

renderNav();
