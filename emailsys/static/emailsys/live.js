/* Live admin pages: one WebSocket per page, fragments swapped in place, the newest version kept.

   Page contract (server-rendered templates; see README "Live pages"):
   - one element `[data-live-socket="/ws/live/<group>/"]` says what to watch; the script adds the connection
     state inside it (`.live-state`, "reconnecting…" while closed);
   - every live fragment is an element with an `id`, `data-live-key="<kind>-<id>"` and `data-live-v="<version>"`;
     a message `{"type": "update", "payload": {"key", "version", "fragments": {id: html}, ...}}` replaces the
     elements of those ids when its version is newer than the key's shown one (older ones are dropped);
   - a button `[data-live-action="<url>"]` with `data-live-key`, `data-live-target` (the fragment id it changes)
     and `data-live-pending` ("Starting…") is optimistic: the target shows the pending text at once and keeps it
     against older messages until the POST answers `{"version": N}` and a message of version ≥ N arrives; an
     error answer (`{"detail": "..."}`) rolls it back and is shown in `[data-live-errors]`.
     `data-live-params="#form-id"` posts that form's fields along.
   - each applied message is also dispatched as a `live:update` event on `document` (detail: the payload).
   No inline code or styles: the Content-Security-Policy allows only this site's scripts and style sheets. */
(function () {
  "use strict";

  const RECONNECT_BASE_MS = 500;
  const RECONNECT_CAP_MS = 30000;
  const HOLD_TIMEOUT_MS = 15000;
  const FINAL_CODES = { 4401: "Your session ended: log in again to see live updates.",
                        4403: "You may no longer watch this page." };

  const shown = {};     // key → newest version on the page
  const holds = {};     // key → version an optimistic action waits for (Infinity: its answer is pending)
  const parked = {};    // key → newest payload dropped during a hold (applied if the hold ends below it)

  function versionOf(element) {
    const v = Number(element.getAttribute("data-live-v"));
    return Number.isFinite(v) ? v : 0;
  }

  function scanVersions(root) {
    root.querySelectorAll("[data-live-key][data-live-v]").forEach(function (el) {
      const key = el.getAttribute("data-live-key");
      shown[key] = Math.max(shown[key] || 0, versionOf(el));
    });
  }

  function swap(id, html) {
    const old = document.getElementById(id);
    if (!old) return;
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fresh = template.content.firstElementChild;
    if (fresh) old.replaceWith(fresh);
  }

  function apply(payload) {
    Object.entries(payload.fragments || {}).forEach(function (entry) { swap(entry[0], entry[1]); });
    shown[payload.key] = payload.version;
    document.dispatchEvent(new CustomEvent("live:update", { detail: payload }));
  }

  function receive(payload) {
    if (!payload || payload.key === undefined) return;
    const version = Number(payload.version);
    if (version <= (shown[payload.key] || 0)) return;         // older than (or as old as) what the page shows
    const hold = holds[payload.key];
    if (hold !== undefined && version < hold) {               // an optimistic state waits for a newer one
      const kept = parked[payload.key];
      if (!kept || kept.version < version) parked[payload.key] = payload;
      return;
    }
    delete holds[payload.key];
    delete parked[payload.key];
    apply(payload);
  }

  function releaseHold(key, version) {
    holds[key] = version;
    const kept = parked[key];
    if (kept && kept.version >= version) receive(kept);
  }

  // --- connection ---------------------------------------------------------------------------------------------

  function Connection(root) {
    this.root = root;
    this.url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      root.getAttribute("data-live-socket");
    this.attempt = 0;
    this.state = root.querySelector(".live-state");
    if (!this.state) {
      this.state = document.createElement("span");
      this.state.className = "live-state";
      root.prepend(this.state);
    }
    this.open();
  }

  Connection.prototype.show = function (state, text) {
    this.state.setAttribute("data-state", state);
    this.state.textContent = text;
    document.body.setAttribute("data-live-state", state);
  };

  Connection.prototype.open = function () {
    const self = this;
    self.show(self.attempt ? "reconnecting" : "connecting", self.attempt ? "reconnecting…" : "connecting…");
    const socket = new WebSocket(self.url);
    self.socket = socket;
    socket.onopen = function () { self.show("live", "live"); };
    socket.onmessage = function (event) {
      let message;
      try { message = JSON.parse(event.data); } catch (error) { return; }
      if (message.type === "subscribed") { self.attempt = 0; return; }
      if (message.type === "update") receive(message.payload);
    };
    socket.onclose = function (event) {
      if (self.socket !== socket) return;
      if (FINAL_CODES[event.code]) { self.show("ended", FINAL_CODES[event.code]); return; }
      self.attempt += 1;
      const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * Math.pow(2, Math.min(self.attempt, 10)));
      const delay = 250 + Math.random() * ceiling;            // full jitter: clients do not return in step
      self.show("reconnecting", "reconnecting…");
      window.setTimeout(function () { self.open(); }, delay);
    };
  };

  Connection.prototype.resync = function () {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.close(4000, "resync");
  };

  // --- optimistic actions -------------------------------------------------------------------------------------

  function csrfToken() {
    const field = document.querySelector("[name=csrfmiddlewaretoken]");
    if (field) return field.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function showError(button, text) {
    const box = document.querySelector("[data-live-errors]");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  function act(button, connection) {
    const key = button.getAttribute("data-live-key");
    const target = document.getElementById(button.getAttribute("data-live-target") || "");
    const saved = target ? target.outerHTML : null;
    if (target) {
      target.textContent = button.getAttribute("data-live-pending") || "working…";
      target.classList.add("live-optimistic");
    }
    holds[key] = Infinity;
    showError(button, "");
    const body = new URLSearchParams();
    const paramsFrom = button.getAttribute("data-live-params");
    if (paramsFrom) {
      const form = document.querySelector(paramsFrom);
      if (form) new FormData(form).forEach(function (value, name) { body.append(name, value); });
    }
    button.disabled = true;
    fetch(button.getAttribute("data-live-action"), {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (answer) {
        if (!response.ok) throw new Error(answer.detail || ("The server answered " + response.status + "."));
        releaseHold(key, Number(answer.version) || 0);
        window.setTimeout(function () {
          if (holds[key] !== undefined && (shown[key] || 0) < holds[key]) { delete holds[key]; connection.resync(); }
        }, HOLD_TIMEOUT_MS);
      });
    }).catch(function (error) {
      delete holds[key];
      if (saved && target && target.isConnected) swap(target.id, saved);
      showError(button, error.message || String(error));
      const kept = parked[key];
      delete parked[key];
      if (kept) receive(kept);
    }).finally(function () { button.disabled = false; });
  }

  function start() {
    const root = document.querySelector("[data-live-socket]");
    if (!root) return;
    scanVersions(document);
    const connection = new Connection(root);
    document.addEventListener("click", function (event) {
      const button = event.target.closest("[data-live-action]");
      if (!button) return;
      event.preventDefault();
      act(button, connection);
    });
    window.emailsysLive = { shown: shown, connection: connection };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
