// The shared page chrome: the site header, and the few DOM helpers every page uses.
// Text from users only ever reaches the page through textContent (el() children), never as HTML.

import { currentUser, hasRole, logOut } from "./api.js";
import { bell } from "./bell.js";

/**
 * Make an element. `props`: "class", "text", "dataset" (object), "on<Event>" handlers, anything else
 * becomes an attribute (false/null skip it). Children are nodes or strings (inserted as text).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2).toLowerCase(), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show a message in a status box (role="status" or "alert"); an empty message hides it. */
export function say(box, message, kind = "error") {
  box.textContent = message || "";
  box.hidden = !message;
  box.classList.toggle("notice-error", kind === "error");
  box.classList.toggle("notice-ok", kind === "ok");
}

/**
 * Show an ApiError on a form: field messages next to their inputs (`#<field>-error`), and the
 * problem's detail in `formBox`. Returns true when at least one field had a message.
 */
export function showErrors(form, formBox, error) {
  clearErrors(form, formBox);
  const fields = typeof error.fieldErrors === "function" ? error.fieldErrors() : {};
  const unplaced = [];
  for (const [field, message] of Object.entries(fields)) {
    const slot = form.querySelector(`#${CSS.escape(field)}-error`);
    const input = form.elements.namedItem(field);
    if (!slot) {
      unplaced.push(`${field}: ${message}`);
      continue;
    }
    slot.textContent = message;
    slot.hidden = false;
    if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
  }
  const placed = Object.keys(fields).length > unplaced.length;
  // With every message beside its field, the form-level line only points at them.
  const summary = placed && !unplaced.length ? "Please correct the marked fields." : error.message || "something went wrong";
  say(formBox, [summary, ...unplaced].join(" "));
  return placed;
}

export function clearErrors(form, formBox) {
  for (const slot of form.querySelectorAll(".field-error")) {
    slot.textContent = "";
    slot.hidden = true;
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  say(formBox, "");
}

/** Disable a form's controls while `work` runs. */
export async function busy(form, work) {
  const controls = [...form.querySelectorAll("button, input, select, textarea")].filter((c) => !c.disabled);
  for (const c of controls) c.disabled = true;
  form.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    for (const c of controls) c.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

let leaveGuard = null;

/**
 * While `guard()` returns a message (the studio while live), following a link in the header asks first
 * (the browser's own beforeunload dialog covers closing the tab and typing an address).
 */
export function guardLeaving(guard) {
  leaveGuard = guard;
}

/** Whether leaving may go ahead: asks when the guard has something to say. */
export function mayLeave() {
  const message = leaveGuard ? leaveGuard() : null;
  if (!message) return true;
  if (!window.confirm(message)) return false;
  window.dispatchEvent(new Event("tally:leaving")); // asked once: no second (beforeunload) question
  return true;
}

document.addEventListener("click", (event) => {
  const link = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (!link || !leaveGuard || event.defaultPrevented || link.target === "_blank" || link.hasAttribute("download")) return;
  // A new tab (Ctrl, Cmd, Shift, middle click) or a jump within this page leaves nothing.
  if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin === location.origin && url.pathname === location.pathname && url.search === location.search) return;
  if (!mayLeave()) event.preventDefault();
});

// The installable app: the service worker keeps the shell for when the network is gone.
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js").catch(() => null);
}

/** Draw the site header into <header id="site-header">; resolves to the signed-in user or null. */
export async function renderNav() {
  const header = document.getElementById("site-header");
  let user = null;
  try {
    user = await currentUser();
  } catch {
    user = null; // the header still works signed out when the API is unreachable
  }
  const here = location.pathname;
  const link = (href, label, extra = {}) =>
    el("a", { href, "aria-current": here === href ? "page" : null, ...extra }, label);

  const main = el("ul", { class: "nav-links" },
    el("li", {}, link("/", "Directory")),
    user ? el("li", {}, link(`/watch/${encodeURIComponent(user.username)}`, "My channel")) : null,
    user ? el("li", {}, link("/settings", "Settings")) : null,
    hasRole(user, "admin") ? el("li", {}, link("/admin", "Admin")) : null,
  );
  // Going live is one click from every page: the studio for broadcasters, signing up for visitors.
  const goLive = hasRole(user, "broadcaster")
    ? link("/studio", "Go live", { id: "nav-go-live", class: "button button-small button-live" })
    : user ? null : link("/signup?next=%2Fstudio", "Go live", { id: "nav-go-live", class: "button button-small button-live" });
  const account = el("div", { class: "nav-account" });
  if (user) {
    const out = el("button", { type: "button", id: "logout", class: "link-button" }, "Log out");
    out.addEventListener("click", async () => {
      if (!mayLeave()) return;
      out.disabled = true;
      await logOut();
      location.assign("/");
    });
    account.append(bell(), " ", el("span", { id: "nav-user", class: "nav-user" }, user.username), " · ", out);
  } else {
    const current = new URLSearchParams(location.search).get("next");
    const nextPath = here === "/login" || here === "/signup" ? current : here + location.search;
    const next = nextPath ? `?next=${encodeURIComponent(nextPath)}` : "";
    account.append(link(`/login${next}`, "Log in"), " ", link(`/signup${next}`, "Sign up", { class: "button button-small button-secondary" }));
  }
  if (goLive) account.prepend(goLive, " ");
  header.replaceChildren(
    el("nav", { class: "nav", "aria-label": "Main" },
      el("a", { href: "/", class: "brand" }, el("span", { class: "brand-dot", "aria-hidden": "true" }), "Tallylight"),
      main,
      account,
    ),
  );
  return user;
}
