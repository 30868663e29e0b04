/* Live admin pages: one WebSocket per page, fragments swapped in place, the newest version kept.

   Page contract (server-rendered templates; see README "Live pages"):
   - one element `[data-live-socket="/ws/live/<group>/"]` says what to watch (a list page:
     `/ws/live/workorders/?ids=1,2,3`); the connection state is shown in its `.live-state` element (added when
     missing) and as `body[data-live-state]`: connecting, live, reconnecting, ended;
   - every live fragment is an element with an `id`, `data-live-key="<kind>-<id>"` (or "dashboard") and
     `data-live-v="<version>"`; a message `{"type": "update", "payload": {"key", "version", "fragments": {id:
     html}, ...}}` replaces (outerHTML) the elements of those ids when its version is newer than the key's shown
     one; older or equal ones are dropped;
   - the socket reconnects after any close (clean or not) with jittered exponential backoff, at once when the
     browser comes back online or the tab becomes visible; only 4401 (logged out) and 4403 (forbidden) are
     final. The server sends every object's snapshot on connect, so a reconnect is a resync;
   - a button `[data-live-action="<url>"]` with `data-live-key`, `data-live-target` (the fragment id it changes)
     and `data-live-pending` ("Starting…") is optimistic: the target shows the pending text at once (class
     `live-optimistic`) and keeps it against older messages until the POST answers `{"version": N}` (2xx) and a
     message of version ≥ N arrives (or the page already shows N; after HOLD_TIMEOUT_MS it resyncs). An error
     answer (`{"detail": "..."}`, 4xx/5xx, or no answer) rolls the target back and shows the detail in
     `[data-live-errors]`. `data-live-params="#form-id"` posts that form's fields along. The buttons of a key
     are disabled while its POST is pending;
   - each applied message is also dispatched as a `live:update` event on `document` (detail: the payload).
   No inline code or styles: the Content-Security-Policy allows only this site's scripts and style sheets. */
(function () {
  "use strict";

  if (window.emailsysLiveLoaded) return;                      // included twice: one connection only
  window.emailsysLiveLoaded = true;

  const RECONNECT_BASE_MS = 500;
  const RECONNECT_CAP_MS = 30000;
  const HOLD_TIMEOUT_MS = 15000;
  const POST_TIMEOUT_MS = 20000;
  const FINAL_CODES = { 4401: "Your session ended: log in again to see live updates.",
                        4403: "You may no longer watch this page." };

  const shown = {};     // key → newest version on the page
  const holds = {};     // key → version an optimistic action waits for (Infinity: its answer is pending)
  const parked = {};    // key → newest payload dropped during a hold (applied if the hold ends below it)
  const restores = {};  // key → puts the element an optimistic action changed back as it was

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
    template.innerHTML = String(html).trim();
    const fresh = template.content.firstElementChild;
    if (fresh) old.replaceWith(fresh);
  }

  function apply(payload) {
    Object.entries(payload.fragments || {}).forEach(function (entry) { swap(entry[0], entry[1]); });
    shown[payload.key] = Number(payload.version);
    document.dispatchEvent(new CustomEvent("live:update", { detail: payload }));
  }

  function endHold(key) {
    delete holds[key];
    delete restores[key];
    const kept = parked[key];
    delete parked[key];
    if (kept) receive(kept);
  }

  function receive(payload) {
    if (!payload || payload.key === undefined) return;
    const version = Number(payload.version);
    if (!Number.isFinite(version) || version <= (shown[payload.key] || 0)) return;  // not newer than the page
    const hold = holds[payload.key];
    if (hold !== undefined && version < hold) {               // an optimistic state waits for a newer one
      const kept = parked[payload.key];
      if (!kept || kept.version < version) parked[payload.key] = payload;
      return;
    }
    delete holds[payload.key];
    delete parked[payload.key];
    delete restores[payload.key];
    apply(payload);
  }

  // The POST answered version N: a parked message ≥ N ends the hold; so does a page already at N (nothing newer
  // will come: the optimistic text goes, the element as it was is the truth).
  function answered(key, version) {
    holds[key] = version;
    const kept = parked[key];
    if (kept && kept.version >= version) { delete parked[key]; receive(kept); return; }
    if ((shown[key] || 0) >= version) { if (restores[key]) restores[key](); endHold(key); }
  }

  // --- connection ---------------------------------------------------------------------------------------------

  function Connection(root) {
    const self = this;
    self.url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      root.getAttribute("data-live-socket");
    self.attempt = 0;
    self.timer = null;
    self.final = false;
    self.state = root.querySelector(".live-state");
    if (!self.state) {
      self.state = document.createElement("span");
      self.state.className = "live-state";
      root.prepend(self.state);
    }
    window.addEventListener("online", function () { self.now(); });
    document.addEventListener("visibilitychange", function () { if (!document.hidden) self.now(); });
    self.open();
  }

  Connection.prototype.show = function (state, text) {
    this.state.setAttribute("data-state", state);
    this.state.textContent = text;
    document.body.setAttribute("data-live-state", state);
  };

  Connection.prototype.open = function () {
    const self = this;
    self.timer = null;
    self.show(self.attempt ? "reconnecting" : "connecting", self.attempt ? "reconnecting…" : "connecting…");
    let socket;
    try { socket = new WebSocket(self.url); } catch (error) { self.retry(); return; }
    self.socket = socket;
    socket.onopen = function () { if (self.socket === socket) self.show("live", "live"); };
    socket.onmessage = function (event) {
      if (self.socket !== socket) return;
      let message;
      try { message = JSON.parse(event.data); } catch (error) { return; }
      if (message.type === "subscribed") { self.attempt = 0; return; }
      if (message.type === "update") receive(message.payload);
    };
    socket.onclose = function (event) {
      if (self.socket !== socket) return;
      self.socket = null;
      if (FINAL_CODES[event.code]) { self.final = true; self.show("ended", FINAL_CODES[event.code]); return; }
      self.retry();
    };
  };

  Connection.prototype.retry = function () {
    const self = this;
    self.attempt += 1;
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * Math.pow(2, Math.min(self.attempt, 10)));
    const delay = 250 + Math.random() * ceiling;              // full jitter: clients do not return in step
    self.show("reconnecting", "reconnecting…");
    self.timer = window.setTimeout(function () { self.open(); }, delay);
  };

  // Back online or visible again: skip the rest of the backoff.
  Connection.prototype.now = function () {
    if (this.final || this.socket || this.timer === null) return;
    window.clearTimeout(this.timer);
    this.open();
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

  function showError(text) {
    const box = document.querySelector("[data-live-errors]");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  function buttonsOf(key) {
    return Array.prototype.filter.call(document.querySelectorAll("[data-live-action]"), function (button) {
      return button.getAttribute("data-live-key") === key;
    });
  }

  function act(button, connection) {
    const key = button.getAttribute("data-live-key");
    if (holds[key] !== undefined && holds[key] === Infinity) return;  // its previous POST is still pending
    const target = document.getElementById(button.getAttribute("data-live-target") || "");
    const saved = target ? target.outerHTML : null;
    if (target) {
      target.textContent = button.getAttribute("data-live-pending") || "working…";
      target.classList.add("live-optimistic");
    }
    restores[key] = function () {
      if (saved && target && target.isConnected) swap(target.id, saved);
    };
    holds[key] = Infinity;
    showError("");
    const body = new URLSearchParams();
    const paramsFrom = button.getAttribute("data-live-params");
    if (paramsFrom) {
      const form = document.querySelector(paramsFrom);
      if (form) new FormData(form).forEach(function (value, name) { body.append(name, value); });
    }
    const buttons = buttonsOf(key);
    buttons.forEach(function (b) { b.disabled = true; });
    const abort = new AbortController();
    const abortTimer = window.setTimeout(function () { abort.abort(); }, POST_TIMEOUT_MS);
    fetch(button.getAttribute("data-live-action"), {
      method: "POST", credentials: "same-origin", body: body, signal: abort.signal,
      headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (answer) {
        if (!response.ok) throw new Error(answer.detail || ("The server answered " + response.status + "."));
        const version = Number(answer.version) || 0;
        answered(key, version);
        window.setTimeout(function () {
          if (holds[key] !== version) return;                 // ended, or another action holds it now
          if (restores[key]) restores[key]();
          endHold(key);
          connection.resync();
        }, HOLD_TIMEOUT_MS);
      });
    }).catch(function (error) {
      if (restores[key]) restores[key]();
      endHold(key);
      const text = error && error.name === "AbortError" ? "The server did not answer; try again." :
        (error && error.message) || String(error);
      showError(text);
    }).finally(function () {
      window.clearTimeout(abortTimer);
      buttons.forEach(function (b) { b.disabled = false; });
    });
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
    document.addEventListener("submit", function (event) {   // Enter in a params form must not reload the page
      if (event.target.matches && document.querySelector("[data-live-params='#" + event.target.id + "']")) {
        event.preventDefault();
      }
    });
    window.emailsysLive = { shown: shown, connection: connection };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
