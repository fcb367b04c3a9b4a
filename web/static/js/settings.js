// Settings: profile, channel, stream key (revealed once), webhooks, and the channels the user follows.

import { api, hasRole } from "./api.js";
import { copyText, flash, parseTags } from "./format.js";
import { busy, clearErrors, el, renderNav, say, showErrors } from "./nav.js";

const $ = (id) => document.getElementById(id);

function dateText(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

// Profile

function fillProfile(user) {
  $("me-username").textContent = user.username;
  $("me-role").textContent = user.role;
  const form = $("profile-form");
  form.elements.display_name.value = user.display_name;
  form.elements.bio.value = user.bio;
}

function setUpProfile(user) {
  const form = $("profile-form");
  fillProfile(user);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, $("profile-error"));
    await busy(form, async () => {
      try {
        const body = { display_name: form.elements.display_name.value.trim(), bio: form.elements.bio.value };
        fillProfile(await api("PATCH", "/api/me", body));
        flash($("profile-saved"), "Saved");
      } catch (error) {
        showErrors(form, $("profile-error"), error);
      }
    });
  });
}

// Channel

function fillChannel(channel) {
  const form = $("channel-form");
  form.elements.title.value = channel.title;
  form.elements.description.value = channel.description;
  form.elements.tags.value = channel.tags.join(", ");
  form.elements.avatar_url.value = channel.avatar_url;
}

async function setUpChannel(user) {
  const form = $("channel-form");
  const name = user.username;
  const link = $("channel-link");
  link.href = `/watch/${encodeURIComponent(name)}`;
  link.textContent = `/watch/${name}`;
  try {
    fillChannel(await api("GET", `/api/channels/${encodeURIComponent(name)}`));
  } catch (error) {
    say($("channel-error"), error.message);
    return;
  }
  if (!hasRole(user, "broadcaster")) {
    for (const control of form.elements) control.disabled = true;
    say($("channel-error"), "Changing your channel needs the broadcaster role. Ask an admin for it.", "info");
    return;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, $("channel-error"));
    await busy(form, async () => {
      try {
        const body = {
          title: form.elements.title.value.trim(),
          description: form.elements.description.value,
          tags: parseTags(form.elements.tags.value),
          avatar_url: form.elements.avatar_url.value.trim(),
        };
        fillChannel(await api("PATCH", `/api/channels/${encodeURIComponent(name)}`, body));
        flash($("channel-saved"), "Saved");
      } catch (error) {
        showErrors(form, $("channel-error"), error);
      }
    });
  });
}

// Stream key

function showKey(result) {
  const revealed = Boolean(result.key);
  $("stream-key-reveal").hidden = !revealed;
  $("stream-key-value").textContent = result.key || "";
  $("stream-key-hidden").hidden = revealed;
  $("stream-key-hint").textContent = result.hint;
  const created = $("stream-key-created");
  created.textContent = result.created_at ? `Made ${dateText(result.created_at)}` : "";
  created.hidden = !result.created_at;
  $("whip-url").value = result.whip_url;
  for (const scheme of ["rtmp", "rtmps"]) {
    $(`${scheme}-url`).value = result[`${scheme}_url`] || "";
    $(`${scheme}-field`).hidden = !result[`${scheme}_url`];
  }
  $("stream-key-body").hidden = false;
}

function noBroadcasting() {
  $("stream-key-body").hidden = true;
  const status = $("stream-key-status");
  say(status, "Streaming needs the broadcaster role, so you have no stream key. Ask an admin for the role.", "info");
  status.classList.add("needs-role");
}

async function setUpStreamKey(user) {
  if (!hasRole(user, "broadcaster")) {
    noBroadcasting();
    return;
  }
  const status = $("stream-key-status");
  const rotate = $("rotate-key");
  const confirmBox = $("rotate-confirm");
  const setConfirming = (on) => {
    confirmBox.hidden = !on;
    rotate.hidden = on;
    (on ? $("rotate-cancel") : rotate).focus();
  };
  rotate.addEventListener("click", () => setConfirming(true));
  $("rotate-cancel").addEventListener("click", () => setConfirming(false));
  $("rotate-yes").addEventListener("click", async () => {
    const yes = $("rotate-yes");
    yes.disabled = true;
    say(status, "");
    try {
      showKey(await api("POST", "/api/me/stream-key"));
      setConfirming(false);
      $("copy-key").focus();
    } catch (error) {
      say(status, error.message);
    } finally {
      yes.disabled = false;
    }
  });
  $("copy-key").addEventListener("click", () =>
    copyText($("stream-key-value").textContent, $("copy-status"), $("stream-key-value")));
  $("copy-whip").addEventListener("click", () => {
    $("whip-url").select();
    copyText($("whip-url").value, $("copy-status"), $("whip-url"));
  });
  for (const scheme of ["rtmp", "rtmps"]) {
    $(`copy-${scheme}`).addEventListener("click", () => {
      $(`${scheme}-url`).select();
      copyText($(`${scheme}-url`).value, $("copy-status"), $(`${scheme}-url`));
    });
  }
  try {
    // The first call ever makes the key and is the only one that shows it.
    showKey(await api("GET", "/api/me/stream-key"));
  } catch (error) {
    if (error.status === 403) noBroadcasting();
    else say(status, error.message);
  }
}

// Webhooks

function drawHooks(user, hooks) {
  const events = { live: "go-live", ended: "stream ended", follow: "new follower" };
  $("webhooks-list").replaceChildren(...hooks.map((hook) => {
    const remove = el("button", { type: "button", class: "link-button", "aria-label": `Delete the webhook to ${hook.url}` }, "Delete");
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try {
        await api("DELETE", `/api/channels/${encodeURIComponent(user.username)}/webhooks/${hook.id}`);
        await loadHooks(user);
      } catch (error) {
        say($("webhook-error"), error.message);
        remove.disabled = false;
      }
    });
    const last = hook.last_attempt_at
      ? (hook.last_status >= 200 && hook.last_status < 300 ? "last delivery OK" : `last delivery failed: ${hook.last_error || hook.last_status}`)
      : "nothing sent yet";
    return el("li", { class: "webhook", dataset: { id: String(hook.id) } },
      el("code", { class: "webhook-url" }, hook.url), " ",
      el("span", { class: "muted" },
        `${Object.keys(events).filter((e) => hook.events.includes(e)).map((e) => events[e]).join(", ")} · ${hook.format} · ${last}`), " ",
      remove);
  }));
}

async function loadHooks(user) {
  const { items } = await api("GET", `/api/channels/${encodeURIComponent(user.username)}/webhooks`);
  drawHooks(user, items);
}

async function setUpWebhooks(user) {
  if (!hasRole(user, "broadcaster")) return;
  $("webhooks-panel").hidden = false;
  const form = $("webhook-form");
  try {
    await loadHooks(user);
  } catch (error) {
    say($("webhook-error"), error.message);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say($("webhook-secret"), "");
    const body = {
      url: form.elements.url.value.trim(),
      events: [...form.querySelectorAll("input[name=events]:checked")].map((box) => box.value),
      format: form.elements.format.value,
    };
    try {
      const hook = await busy(form, () => api("POST", `/api/channels/${encodeURIComponent(user.username)}/webhooks`, body));
      clearErrors(form, $("webhook-error"));
      form.elements.url.value = "";
      say($("webhook-secret"), `Added. Its signing secret, shown this once: ${hook.secret}`, "ok");
      await loadHooks(user);
    } catch (error) {
      showErrors(form, $("webhook-error"), error);
    }
  });
}

// Following

async function setUpFollowing() {
  const list = $("following-list");
  try {
    const { items } = await api("GET", "/api/me/following");
    list.replaceChildren(
      ...items.map((channel) =>
        el("li", { class: "following-item", dataset: { channel: channel.name } },
          el("a", { href: `/watch/${encodeURIComponent(channel.name)}` }, channel.title || channel.name),
          " ",
          el("span", { class: "muted" }, "@", channel.name),
          " ",
          channel.is_live
            ? el("span", { class: "badge badge-live" }, "Live")
            : el("span", { class: "badge badge-offline" }, "Offline"),
        ),
      ),
    );
    $("following-empty").hidden = items.length > 0;
  } catch (error) {
    say($("settings-status"), error.message);
  }
}

const user = await renderNav();
if (!user) {
  location.replace(`/login?next=${encodeURIComponent("/settings")}`);
} else {
  $("settings").hidden = false;
  setUpProfile(user);
  await Promise.all([setUpChannel(user), setUpStreamKey(user), setUpWebhooks(user), setUpFollowing()]);
  document.body.dataset.ready = "true";
}
