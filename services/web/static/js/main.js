// The page: its state (loading, serving, unreachable, wrong token), the tabs and the three
// panels. `window.moshiPage` exposes the panels (and their `stats`) for the browser test and
// for anyone curious in the console.

import { ServerError, getJson, saveToken, savedToken } from "./connection.js";
import { Speak } from "./speak.js";
import { Talk } from "./talk.js";
import { Transcribe } from "./transcribe.js";
import { byId } from "./ui.js";

const POLL_LOADING_MS = 1000;
const POLL_SERVING_MS = 5000;

class Page {
  constructor() {
    this.serving = false;
    this.pauseHeads = false;
    this.info = null;
    this.state = "starting";
    const token = byId("token");
    token.value = savedToken();
    byId("token-form").onsubmit = (event) => event.preventDefault();
    token.onchange = () => { saveToken(token.value); this.serving = false; this.poll(); };
    this.talk = new Talk(this);
    this.transcribe = new Transcribe(this);
    this.speak = new Speak(this);
    // Each panel, the service of /api/info it needs, and its element id.
    this.panels = [{ panel: this.talk, service: "chat", id: "talk" },
                   { panel: this.transcribe, service: "asr", id: "transcribe" },
                   { panel: this.speak, service: "tts", id: "speak" }];
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.onclick = () => this.showTab(tab.dataset.panel);
    }
    this.poll();
  }

  token() { return byId("token").value.trim(); }

  /** Whether the server has `service` ("chat", "asr", "tts"), as /api/info says (a server
   * without /api/info: assumed). */
  offers(service) {
    return !this.info || !this.info.services || this.info.services.includes(service);
  }

  /** Whether a panel can start now: the server serves and has its service. */
  available(service) { return this.serving && this.offers(service); }

  showTab(name) {
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.panel === name));
    }
    for (const panel of document.querySelectorAll("[role=tabpanel]")) {
      panel.hidden = panel.id !== name;
    }
  }

  /** Health now, then again in a while: fast while loading, slowly once serving. */
  async poll() {
    clearTimeout(this.pollTimer);
    let serving = false;
    try {
      serving = (await getJson("api/health")).serving === true;
      if (serving && !this.serving) await this.loadInfo();
      else if (!serving) this.setState("loading");
    } catch (error) {
      this.setState(error instanceof ServerError && error.kind === "auth" ? "auth" : "lost");
      serving = false;
    }
    this.serving = serving && this.state === "serving";
    for (const { panel, service, id } of this.panels) {
      panel.setEnabled(this.available(service));
      byId(`${id}-missing`).hidden = this.offers(service);
    }
    this.pollTimer = setTimeout(() => this.poll(), this.serving ? POLL_SERVING_MS : POLL_LOADING_MS);
  }

  /** What the server serves (/api/info) and its voices (/api/voices). */
  async loadInfo() {
    try {
      this.info = await getJson("api/info", this.token());
    } catch (error) {
      if (error.kind === "auth") { this.setState("auth"); return; }
      this.info = null;  // an older server: offer everything, the endpoints will say
    }
    const services = this.info ? this.info.services || [] : [];
    this.pauseHeads = Boolean(this.info && this.info.pause_heads);
    byId("server-summary").textContent = this.info
      ? `${services.join(", ")} · ${this.info.max_sessions} slots` : "";
    byId("asr-turns").textContent = this.pauseHeads
      ? "End-of-turn markers: on (the model has pause heads)."
      : "End-of-turn markers: off (this model has no pause heads).";
    try {
      const voices = await getJson("api/voices", this.token());
      this.speak.setVoices(voices.voices || [], voices.default || "");
    } catch (error) {
      this.speak.setVoices([], "");
    }
    this.setState("serving");
  }

  setState(state) {
    this.state = state;
    document.body.dataset.server = state;
    const banner = byId("banner");
    const text = {
      loading: "Loading the model: the server is warming up. This page connects when it is ready.",
      lost: "Connection lost: the server does not answer. Retrying…",
      auth: "Wrong token: the server refused it. Type the server's --auth-token above.",
    }[state];
    banner.hidden = !text;
    banner.className = `banner ${state}`;
    banner.textContent = text || "";
    if (state !== "serving") this.serving = false;
  }

  /** What a panel shows for an error (a ServerError or {kind, message}). */
  explain(error) {
    switch (error.kind) {
      case "auth": return `Wrong token: ${error.message}. Type the server's --auth-token above.`;
      // (the message says what was refused; the advice is the same for every panel)
      case "full": return `Server full: ${error.message}`;
      case "lost": return `Connection lost: ${error.message}`;
      case "unreachable": return "Connection lost: cannot reach the server.";
      default: return `Error: ${error.message}`;
    }
  }
}

window.moshiPage = new Page();
