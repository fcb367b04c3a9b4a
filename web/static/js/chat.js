// The chat panel beside a stream. It speaks the chat protocol (signaling/chat/PROTOCOL.md) over the
// player's WebRTC data channel when there is one, else over the WebSocket /ws. Messages are shown in
// id order (the server's order), only ever as text. Moderators get delete / time-out / ban buttons
// and the chat's modes; all of it is enforced by the server, the panel only offers it.

import { api, tokens } from "./api.js";
import { el } from "./nav.js";

const RECONNECT_MS = 3000;

export class ChatPanel {
  constructor(root, channel, { forceWebSocket = false, onViewers = () => {}, onLive = () => {}, onDataChannelClosed = () => {} } = {}) {
    this.root = root;
    this.channel = channel;
    this.forceWebSocket = forceWebSocket;
    this.onViewers = onViewers;
    this.onLive = onLive; // the stream started (true) or ended (false)
    this.onDataChannelClosed = onDataChannelClosed;
    this.log = root.querySelector(".chat-log");
    this.form = root.querySelector(".chat-form");
    this.input = this.form.querySelector("input");
    this.status = root.querySelector(".chat-status");
    this.modes = root.querySelector(".chat-modes");
    this.empty = root.querySelector(".chat-empty");
    this.signIn = root.querySelector(".chat-sign-in");
    this.signIn.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    this.pending = new Map(); // nonce -> text sent and not yet accepted (given back if refused)
    this.chattersButton = root.querySelector(".chat-chatters-button");
    this.chatters = root.querySelector(".chat-chatters");
    this.chattersTimer = null;
    this.chattersButton.addEventListener("click", () => this.toggleChatters());
    this.me = null;
    this.settings = { slow_mode: 0, followers_only: false, max_length: 500 };
    this.transport = null; // { kind, send(text), close() }
    this.socketTimer = null;
    this.nonce = 0;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.post();
    });
    this.modes.querySelector(".chat-slow").addEventListener("change", (e) => this.changeModes({ slow_mode: Number(e.target.value) }));
    this.modes.querySelector(".chat-followers").addEventListener("change", (e) => this.changeModes({ followers_only: e.target.checked }));
    this.drawStanding();
  }

  /** Chat over the WebSocket (when there is no WebRTC session, or it is forced). */
  useWebSocket() {
    if (this.transport?.kind === "websocket") return;
    this.closeTransport();
    const url = new URL(`/ws?channel=${encodeURIComponent(this.channel)}`, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url);
    const transport = { kind: "websocket", send: (text) => ws.send(text), close: () => ws.close() };
    this.transport = transport;
    this.root.dataset.transport = "websocket";
    ws.addEventListener("open", () => {
      const token = tokens().access;
      if (token) ws.send(JSON.stringify({ type: "auth", token }));
    });
    ws.addEventListener("message", (event) => this.receive(event.data));
    ws.addEventListener("close", () => {
      if (this.transport !== transport) return;
      this.transport = null;
      this.root.dataset.transport = "none";
      this.showStatus("Chat disconnected. Reconnecting…");
      clearTimeout(this.socketTimer);
      this.socketTimer = setTimeout(() => this.useWebSocket(), RECONNECT_MS);
    });
  }

  /** Chat over a WebRTC data channel labelled "chat" (the player's session). */
  useDataChannel(channel) {
    if (this.forceWebSocket) {
      channel.close();
      return;
    }
    const transport = { kind: "datachannel", send: (text) => channel.send(text), close: () => channel.close() };
    channel.addEventListener("open", () => {
      this.closeTransport();
      this.transport = transport;
      this.root.dataset.transport = "datachannel";
    });
    channel.addEventListener("message", (event) => {
      if (this.transport === transport) this.receive(event.data);
    });
    channel.addEventListener("close", () => {
      if (this.transport !== transport) return;
      this.transport = null;
      this.useWebSocket(); // until the player has a session again
      this.onDataChannelClosed();
    });
  }

  closeTransport() {
    clearTimeout(this.socketTimer);
    const old = this.transport;
    this.transport = null;
    old?.close();
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.settings = frame.settings;
        this.log.replaceChildren();
        frame.history.forEach((m) => this.addMessage(m));
        this.drawEmpty();
        this.drawModes();
        this.showStatus("");
        break;
      case "you":
        this.me = frame;
        this.drawStanding();
        this.decorate();
        break;
      case "message":
        this.addMessage(frame);
        break;
      case "deleted":
        this.log.querySelector(`li[data-id="${Number(frame.id)}"]`)?.remove();
        break;
      case "notice":
        this.addLine(el("li", { class: "chat-notice" }, frame.text));
        if (this.me && frame.user === this.me.username) this.refreshStanding();
        break;
      case "settings":
        this.settings = frame;
        this.drawModes();
        this.addLine(el("li", { class: "chat-notice" }, describeModes(frame)));
        this.refreshStanding();
        break;
      case "viewers":
        this.onViewers(frame.count);
        break;
      case "live":
        this.onLive(Boolean(frame.live));
        break;
      case "ack":
        this.pending.delete(frame.nonce);
        this.showStatus("");
        break;
      case "error":
        // A refused post (too fast, slow mode, too long) comes back to the box, not lost.
        if (frame.nonce && this.pending.has(frame.nonce)) {
          if (!this.input.value.trim()) this.input.value = this.pending.get(frame.nonce);
          this.pending.delete(frame.nonce);
        }
        this.showStatus(frame.retry_after ? `${frame.detail} (try again in ${frame.retry_after} s)` : frame.detail);
        break;
      default:
        break;
    }
  }

  refreshStanding() {
    // The server sends a fresh `you` after auth; re-authenticating is the simplest way to ask again.
    const token = tokens().access;
    if (token && this.transport) this.transport.send(JSON.stringify({ type: "auth", token }));
  }

  addMessage(m) {
    if (this.log.querySelector(`li[data-id="${Number(m.id)}"]`)) return;
    const badges = m.user.badges.map((b) => el("span", { class: `chat-badge chat-badge-${b}` }, b));
    const at = m.at ? new Date(m.at) : null;
    const time = at && !Number.isNaN(at.getTime())
      ? el("time", { class: "chat-time", datetime: m.at, title: at.toLocaleString() },
        at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }))
      : null;
    const item = el(
      "li",
      { class: "chat-message", dataset: { id: String(m.id), user: m.user.username } },
      time, time ? " " : null,
      ...badges,
      el("strong", { class: "chat-author", title: `@${m.user.username}` }, m.user.display_name),
      " ",
      el("span", { class: "chat-text" }, m.text),
    );
    if (this.me?.can_moderate && m.user.username !== this.me.username) item.append(this.moderationButtons(m));
    // Keep id order even when frames arrive out of order (two transports, two server processes).
    const later = [...this.log.querySelectorAll("li[data-id]")].find((li) => Number(li.dataset.id) > m.id);
    if (later) this.log.insertBefore(item, later);
    else this.addLine(item);
    this.drawEmpty();
  }

  drawEmpty() {
    this.empty.hidden = this.log.querySelector("li[data-id]") !== null;
  }

  /** Moderation buttons on every message shown, once we know we may moderate. */
  decorate() {
    for (const item of this.log.querySelectorAll("li[data-id]")) {
      const mine = item.dataset.user === this.me?.username;
      const buttons = item.querySelector(".chat-mod");
      if (this.me?.can_moderate && !mine && !buttons) {
        item.append(this.moderationButtons({ id: Number(item.dataset.id), user: { username: item.dataset.user } }));
      } else if (!this.me?.can_moderate && buttons) {
        buttons.remove();
      }
    }
  }

  moderationButtons(m) {
    const base = `/api/channels/${encodeURIComponent(this.channel)}/chat`;
    const act = (method, path, body) => api(method, path, body).catch((error) => this.showStatus(error.message));
    const who = encodeURIComponent(m.user.username);
    return el(
      "span",
      { class: "chat-mod" },
      el("button", { type: "button", class: "link-button chat-delete", title: "Delete for everyone", onClick: () => act("DELETE", `${base}/${m.id}`) }, "Delete"),
      el("button", { type: "button", class: "link-button chat-timeout", title: "Time out for 10 minutes", onClick: () => act("PUT", `${base}/bans/${who}`, { seconds: 600 }) }, "Time out"),
      el("button", { type: "button", class: "link-button chat-ban", title: "Ban from this chat", onClick: () => act("PUT", `${base}/bans/${who}`, {}) }, "Ban"),
    );
  }

  addLine(item) {
    const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 8;
    this.log.append(item);
    while (this.log.children.length > 500) this.log.firstElementChild.remove();
    if (atBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  drawStanding() {
    const me = this.me;
    const canPost = Boolean(me?.can_post);
    this.input.disabled = !canPost;
    this.form.querySelector("button").disabled = !canPost;
    this.input.placeholder = canPost ? "Say something…" : me?.reason || "Sign in to chat";
    this.input.maxLength = this.settings.max_length;
    this.signIn.hidden = Boolean(tokens().access); // signed out: a link, not just a placeholder
    this.modes.hidden = !me?.can_moderate;
    this.root.dataset.canPost = String(canPost);
    this.root.dataset.canModerate = String(Boolean(me?.can_moderate));
  }

  drawModes() {
    this.modes.querySelector(".chat-slow").value = String(this.settings.slow_mode);
    this.modes.querySelector(".chat-followers").checked = this.settings.followers_only;
    this.drawStanding();
  }

  async changeModes(change) {
    try {
      await api("PATCH", `/api/channels/${encodeURIComponent(this.channel)}/chat/settings`, change);
    } catch (error) {
      this.showStatus(error.message);
      this.drawModes();
    }
  }

  post() {
    const text = this.input.value.trim();
    if (!text) return;
    if (!this.transport) {
      this.showStatus("Chat is reconnecting: your message is still in the box.");
      return;
    }
    this.nonce += 1;
    const nonce = `m${this.nonce}`;
    this.pending.set(nonce, text);
    if (this.pending.size > 20) this.pending.delete(this.pending.keys().next().value);
    this.transport.send(JSON.stringify({ type: "send", text, nonce }));
    this.input.value = "";
  }

  /** Who is in the chat: a list under the title, kept fresh every 10 s while open. */
  toggleChatters() {
    const open = this.chattersButton.getAttribute("aria-expanded") !== "true";
    this.chattersButton.setAttribute("aria-expanded", String(open));
    this.chatters.hidden = !open;
    clearTimeout(this.chattersTimer);
    if (open) this.drawChatters();
  }

  async drawChatters() {
    clearTimeout(this.chattersTimer);
    try {
      const { items, count } = await api("GET", `/api/channels/${encodeURIComponent(this.channel)}/chat/chatters`, undefined, { auth: false });
      const list = this.chatters.querySelector("ul");
      list.replaceChildren(...items.map((name) => el("li", { class: "chat-chatter" }, name)));
      const more = count - items.length;
      this.chatters.querySelector(".chat-chatters-note").textContent =
        count === 0 ? "Nobody signed in is here yet." : more > 0 ? `and ${more} more` : "";
      this.chattersButton.textContent = `In chat (${count})`;
    } catch (error) {
      this.chatters.querySelector(".chat-chatters-note").textContent = error.message;
    }
    if (!this.chatters.hidden && !this.stopped) this.chattersTimer = setTimeout(() => this.drawChatters(), 10_000);
  }

  showStatus(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.chattersTimer);
    this.forceWebSocket = true;
    this.closeTransport();
  }
}

function describeModes(s) {
  const parts = [];
  parts.push(s.slow_mode ? `slow mode ${s.slow_mode} s` : "slow mode off");
  parts.push(s.followers_only ? "followers only" : "everyone may chat");
  return `Chat: ${parts.join(", ")}.`;
}

/** The panel's markup, for pages that include the chat. */
export function chatMarkup() {
  const slow = el("select", { class: "chat-slow", "aria-label": "Slow mode" },
    ...[[0, "Slow mode off"], [5, "5 s"], [10, "10 s"], [30, "30 s"], [60, "60 s"], [120, "2 min"]].map(
      ([value, label]) => el("option", { value: String(value) }, label)));
  const chattersId = `chatters-${Math.random().toString(36).slice(2, 8)}`;
  return [
    el("div", { class: "chat-head" },
      el("h2", { class: "chat-title" }, "Chat"),
      el("button", { type: "button", class: "link-button chat-chatters-button", "aria-expanded": "false",
        "aria-controls": chattersId }, "In chat")),
    el("div", { class: "chat-chatters", id: chattersId, hidden: true },
      el("ul", { class: "chat-chatter-list", "aria-label": "Signed-in users in the chat" }),
      el("p", { class: "chat-chatters-note muted" })),
    el("div", { class: "chat-modes", hidden: true }, slow,
      el("label", { class: "chat-followers-label" }, el("input", { type: "checkbox", class: "chat-followers" }), " Followers only")),
    // role="log" without aria-live: a screen reader reads the chat when asked, instead of every message.
    el("ol", { class: "chat-log", role: "log", "aria-live": "off", "aria-label": "Chat messages", tabindex: "0" }),
    el("p", { class: "chat-empty muted" }, "No messages yet. Say hello!"),
    el("p", { class: "chat-status notice", role: "status", hidden: true }),
    el("p", { class: "chat-sign-in-line" }, el("a", { class: "chat-sign-in", href: "/login", hidden: true }, "Sign in to chat")),
    el("form", { class: "chat-form" },
      el("input", { type: "text", name: "message", "aria-label": "Chat message", autocomplete: "off" }),
      el("button", { type: "submit", class: "button" }, "Send")),
  ];
}
