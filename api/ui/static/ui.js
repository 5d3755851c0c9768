// pulsegate web UI: refresh the page's live part, and send operator actions. No framework and
// nothing fetched from elsewhere. Actions are POSTs with a JSON body and a custom header, which
// a cross-site form cannot send; the token (auth on) travels as a Bearer header.
"use strict";

(function () {
  const TOKEN_KEY = "pulsegate-token";
  const content = document.getElementById("content");
  const REFRESH_MS = Number(content.dataset.refreshMs) || 2000;
  const live = document.getElementById("live");
  const flash = document.getElementById("flash");
  const tokenInput = document.getElementById("token");
  const authOn = document.body.dataset.auth === "on";

  function token() {
    return (tokenInput && tokenInput.value) || sessionStorage.getItem(TOKEN_KEY) || "";
  }

  if (tokenInput) {
    tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
    tokenInput.addEventListener("change", function () {
      sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
    });
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = token();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  }

  function show(kind, text) {
    flash.hidden = false;
    flash.className = "flash flash-" + kind;
    flash.textContent = text;
  }

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  function isFinal() {
    return content.querySelector("[data-final='1']") !== null;
  }

  async function refresh() {
    try {
      const r = await fetch(content.dataset.refresh, { headers: headers(), cache: "no-store" });
      const text = await r.text();
      if (r.ok) {
        content.innerHTML = text;
        setLive("ok", "live · " + new Date().toLocaleTimeString());
      } else {
        setLive("error", "refresh failed: HTTP " + r.status);
      }
    } catch (e) {
      setLive("error", "scheduler unreachable: " + e.message);
    }
    if (isFinal()) {
      setLive("done", "final");
    } else {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  async function act(button) {
    const verb = button.dataset.action;
    const url = button.closest("[data-update]").dataset.update + "/" + verb;
    let message = "";
    if (verb === "pause") {
      message = window.prompt("Why pause this update? (recorded with your name)", "");
      if (message === null) return;
      if (!message.trim()) {
        show("error", "pause needs a reason");
        return;
      }
    } else if (verb === "abort" || verb === "rollback") {
      message = window.prompt(verb === "abort" ? "Abort: why?" : "Roll back: why?", "");
      if (message === null) return;
    }
    if (authOn && !token()) {
      const given = window.prompt("This scheduler needs a token for " + verb + ":", "");
      if (!given) return;
      sessionStorage.setItem(TOKEN_KEY, given);
      if (tokenInput) tokenInput.value = given;
    }
    button.disabled = true;
    try {
      const r = await fetch(url, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", "X-Pulsegate-Action": "1" }),
        body: JSON.stringify({ message: message }),
      });
      let answer = {};
      try {
        answer = await r.json();
      } catch (e) {
        answer = { error: "HTTP " + r.status };
      }
      if (r.ok) {
        show("ok", verb + ": done, now " + answer.status);
      } else {
        show("error", verb + " failed: " + (answer.error || "HTTP " + r.status));
      }
    } catch (e) {
      show("error", verb + " failed: scheduler unreachable (" + e.message + ")");
    }
    button.disabled = false;
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-action]");
    if (button && !button.disabled) act(button);
  });

  if (!isFinal()) setTimeout(refresh, REFRESH_MS);
  else setLive("done", "final");
})();
