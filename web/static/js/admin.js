// Administration: every user, with a select to change the role.

import { api, hasRole } from "./api.js";
import { el, renderNav, say } from "./nav.js";

const ROLES = ["viewer", "broadcaster", "moderator", "admin"];
const status = document.getElementById("admin-status");

function roleCell(user) {
  const id = `role-${user.username}`;
  const select = el("select", { id, class: "role-select", "aria-label": `Role of ${user.username}` },
    ROLES.map((role) => el("option", { value: role, selected: role === user.role }, role)));
  const note = el("span", { class: "role-status", role: "status" });
  select.addEventListener("change", async () => {
    const wanted = select.value;
    select.disabled = true;
    note.textContent = "Saving…";
    note.className = "role-status";
    try {
      const changed = await api("PUT", `/api/users/${encodeURIComponent(user.username)}/role`, { role: wanted });
      user.role = changed.role;
      note.textContent = "Saved";
      note.classList.add("saved");
    } catch (error) {
      select.value = user.role; // the server said no: show what is still true
      note.textContent = error.message;
      note.classList.add("field-error");
    } finally {
      select.disabled = false;
    }
  });
  return el("td", {}, select, " ", note);
}

function row(user) {
  return el("tr", { dataset: { username: user.username } },
    el("td", {}, el("a", { href: `/watch/${encodeURIComponent(user.username)}` }, user.username)),
    el("td", {}, user.display_name),
    el("td", {}, user.email || ""),
    el("td", {}, new Date(user.created_at).toLocaleDateString()),
    roleCell(user),
  );
}

const me = await renderNav();
if (!me) {
  location.replace(`/login?next=${encodeURIComponent("/admin")}`);
} else if (!hasRole(me, "admin")) {
  say(status, "This page is for admins.");
} else {
  try {
    const { items } = await api("GET", "/api/users");
    document.querySelector("#users tbody").replaceChildren(...items.map(row));
    document.getElementById("users-panel").hidden = false;
  } catch (error) {
    say(status, error.message);
  }
}
document.body.dataset.ready = "true";
