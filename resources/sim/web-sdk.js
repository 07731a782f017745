/**
 * Simulated Avaturn Live Web SDK, served by the local simulator at /sim/web-sdk.js.
 *
 * It has the public API of `AvaturnHead` from `@avaturn-live/web-sdk` (0.3.x) and talks to the
 * simulator's copy of the SDK's private API (`${apiHost}/_sdk/v0`, header `X-Session-Token`).
 * Instead of joining a WebRTC room it opens the simulator's event WebSocket and draws a
 * stand-in avatar on a canvas: a face whose mouth moves while it speaks. (Captions are the
 * app's: the stage page draws them for both SDKs, so this one draws none.)
 *
 * Like the official SDK it plays the avatar as a real media stream: `mediaStream` holds a video
 * track (the canvas, through `captureStream`) and an audio track (a voiced tone made with Web
 * Audio, heard only while the avatar speaks), and a `<video>` element in a closed shadow root
 * under the root element plays it. So whatever watches the picture and the sound (the stage
 * page's watchdog) works the same on both. The simulator's media faults (its `sim_media`
 * channel message) freeze the picture on its last frame, black it out, or mute the voice.
 *
 * Where it differs from the official SDK (on purpose):
 * - `init({timeout})` counts the timeout from the start of `init` (session lookup included),
 *   and a second `init()` while one runs returns the same promise instead of joining twice.
 * - It dispatches `init` once live and `dispose` (payload `{reason}`) when it is disposed,
 *   two event names the official typings declare.
 * - When the simulator drops the event channel it reconnects with backoff (as Daily.co does
 *   after a network blip); when the session ends it draws the reason and disposes itself.
 * - The stand-in's head sways a little even when silent (a real avatar is never still), so a
 *   picture that stops changing is a frozen one.
 * - Option `idleTimeoutMs` (simulator only) shortens the 5 minute idle timer, for tests.
 */

const DEFAULT_API_HOST = "https://api.avaturn.live";
const IDLE_TIMEOUT_MS = 5 * 60 * 1000;
/** Close codes the simulator uses when the session itself is over. */
const SESSION_ENDED_CODES = new Set([4000, 4001, 4002, 4003]);
const RECONNECT_DELAYS_MS = [200, 400, 800, 1600, 3200];
/** Channel messages the simulator adds for the stand-in; never dispatched to handlers. */
const INTERNAL_TYPES = new Set(["sim_caption", "sim_media"]);
const CANVAS_SIZE = { width: 640, height: 640 };
/** The stand-in's frame period: a timer, not animation frames, so that in a hidden page the
 * picture slows to Chromium's one timer a second instead of stopping. */
const FRAME_MS = 40;
/** How loud the voice is at its loudest (full scale is 1). */
const VOICE_GAIN = 0.25;

/** A failed call, shaped like the axios error the official SDK rejects with. */
export class RequestError extends Error {
  constructor(message, { code, response, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "AxiosError";
    this.code = code;
    this.response = response;
    this.status = response ? response.status : undefined;
  }
}

function parseBody(text) {
  if (!text) {
    return "";
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Draws the stand-in avatar: a face, a moving mouth while speaking, and a caption. */
class StandInFace {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.transparent = false;
    this.speaking = false;
    this.caption = "";
    this.notice = "";
    this.black = false; // fault injection: a black picture
  }

  /** How far the mouth is open, 0..1 (0 when silent); the voice follows it. */
  mouth(now) {
    return this.speaking ? 0.25 + 0.75 * Math.abs(Math.sin(now / 95) * Math.cos(now / 240)) : 0;
  }

  draw(now = performance.now()) {
    const { context: ctx, canvas } = this;
    if (!ctx) {
      return;
    }
    const { width: w, height: h } = canvas;
    ctx.clearRect(0, 0, w, h);
    if (this.black) {
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, w, h);
      return;
    }
    if (!this.transparent) {
      const sky = ctx.createLinearGradient(0, 0, 0, h);
      sky.addColorStop(0, "#2b3a55");
      sky.addColorStop(1, "#121826");
      ctx.fillStyle = sky;
      ctx.fillRect(0, 0, w, h);
    }
    this.#drawBody(ctx, w, h);
    this.#drawFace(ctx, w, h, now);
    this.#drawCaption(ctx, w, h);
    this.#drawBadge(ctx);
  }

  #drawBody(ctx, w, h) {
    ctx.fillStyle = "#3d6fb6";
    ctx.beginPath();
    ctx.ellipse(w / 2, h * 1.02, w * 0.36, h * 0.26, 0, Math.PI, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = "#e8b894";
    ctx.fillRect(w / 2 - w * 0.06, h * 0.6, w * 0.12, h * 0.18);
  }

  #drawFace(ctx, w, h, now) {
    // a sway and a breath: the picture is never still
    const cx = w / 2 + Math.sin(now / 450) * w * 0.03;
    const cy = h * 0.42 + Math.sin(now / 700) * h * 0.01;
    const rx = w * 0.2;
    const ry = h * 0.25;
    ctx.fillStyle = "#5a3b2a"; // hair, behind the head
    ctx.beginPath();
    ctx.ellipse(cx, cy - ry * 0.12, rx * 1.12, ry * 1.02, 0, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = "#f1c7a5";
    ctx.beginPath();
    ctx.ellipse(cx, cy + ry * 0.06, rx, ry * 0.94, 0, 0, 2 * Math.PI);
    ctx.fill();

    const blinking = now % 4200 < 130;
    ctx.fillStyle = "#1d1d1d";
    for (const side of [-1, 1]) {
      ctx.beginPath();
      ctx.ellipse(cx + side * rx * 0.42, cy - ry * 0.05, rx * 0.1, blinking ? 1.5 : ry * 0.07, 0, 0, 2 * Math.PI);
      ctx.fill();
    }

    const open = this.mouth(now);
    const mouthY = cy + ry * 0.48;
    ctx.fillStyle = "#7a2530";
    ctx.beginPath();
    ctx.ellipse(cx, mouthY, rx * 0.34, Math.max(2, ry * 0.16 * open), 0, 0, 2 * Math.PI);
    ctx.fill();
  }

  #drawCaption(ctx, w, h) {
    const text = this.notice; // notices only: the app draws the captions
    if (!text) {
      return;
    }
    ctx.font = `${Math.round(h * 0.038)}px sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    const lines = wrapText(ctx, text, w * 0.86).slice(-3);
    const lineHeight = h * 0.05;
    const boxHeight = lines.length * lineHeight + lineHeight * 0.6;
    const top = h - boxHeight - h * 0.04;
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(w * 0.05, top, w * 0.9, boxHeight);
    ctx.fillStyle = this.notice ? "#ffd27a" : "#ffffff";
    lines.forEach((line, index) => {
      ctx.fillText(line, w / 2, top + lineHeight * (index + 0.8));
    });
  }

  #drawBadge(ctx) {
    ctx.font = "bold 16px sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillStyle = "rgba(0, 0, 0, 0.45)";
    ctx.fillRect(10, 10, 104, 26);
    ctx.fillStyle = "#9fe2bf";
    ctx.fillText("SIMULATOR", 18, 15);
  }
}

function wrapText(ctx, text, maxWidth) {
  const lines = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > maxWidth) {
      lines.push(line);
      line = word;
    } else {
      line = candidate;
    }
  }
  if (line) {
    lines.push(line);
  }
  return lines;
}

/**
 * The stand-in's voice: a buzz at a speaking pitch, with vibrato, through a vowel-like band
 * filter, into a MediaStream audio track. Silent until `level()` is raised (while speaking).
 */
class StandInVoice {
  constructor() {
    const context = new AudioContext();
    const source = context.createOscillator();
    source.type = "sawtooth";
    source.frequency.value = 140;
    const vibrato = context.createOscillator();
    vibrato.frequency.value = 5;
    const depth = context.createGain();
    depth.gain.value = 6;
    vibrato.connect(depth).connect(source.frequency);
    const vowel = context.createBiquadFilter();
    vowel.type = "bandpass";
    vowel.frequency.value = 800;
    vowel.Q.value = 1.2;
    const envelope = context.createGain();
    envelope.gain.value = 0;
    const out = context.createMediaStreamDestination();
    source.connect(vowel).connect(envelope).connect(out);
    source.start();
    vibrato.start();
    context.resume().catch(() => {});
    this.context = context;
    this.envelope = envelope;
    this.track = out.stream.getAudioTracks()[0] ?? null;
  }

  /** The loudness, 0..1 of VOICE_GAIN, glided to over a few milliseconds. */
  level(value) {
    const { context, envelope } = this;
    if (context.state === "closed") {
      return;
    }
    envelope.gain.setTargetAtTime(value * VOICE_GAIN, context.currentTime, 0.015);
  }

  close() {
    this.track?.stop();
    this.context.close().catch(() => {});
  }
}

export class AvaturnHead {
  inited = false;
  mediaStream = new MediaStream();
  session_id = "";

  #config;
  #root = null;
  #container = null;
  #handlers = {};
  #abortController = new AbortController();
  #keepAlive = false;
  #idleTimer = 0;
  #sessionData = null;
  #socket = null;
  #joining = null;
  #initializing = null;
  #ready = null;
  #reconnectAttempt = 0;
  #reconnectTimer = 0;
  #canvas = null;
  #face = null;
  #voice = null;
  #video = null;
  #frameTimer = 0;
  #media = { video: "none", audio: "none" };
  #captions = new Map();
  #localAudio = false;

  /**
   * `new AvaturnHead(options)` or `new AvaturnHead(rootElement, options)`, with options
   * `{sessionToken, apiHost?, keepAlive?, preloadBundle?, preconnect?, audioSource?,
   * immediatelyJoin?}`.
   */
  constructor(rootOrOptions, maybeOptions) {
    if (typeof window === "undefined") {
      throw new Error("Unfortunately, SDK only works on the client side.");
    }
    const [options, root] = AvaturnHead.#parseConfig(rootOrOptions, maybeOptions);
    this.#config = options;
    this.#root = root ?? null;
    this.#keepAlive = Boolean(options.keepAlive);
    this.#localAudio = Boolean(options.audioSource);
    if (options.preconnect) {
      this.#request("POST", "/sessions/start_stream").catch((error) => {
        console.warn("[SDK]: start_stream failed:", error.message);
      });
    }
  }

  static #parseConfig(rootOrOptions, maybeOptions) {
    let root;
    let options;
    if (rootOrOptions instanceof HTMLElement) {
      if (!maybeOptions) {
        throw new Error("Options are required when providing a DOM element.");
      }
      root = rootOrOptions;
      options = maybeOptions;
    } else {
      options = rootOrOptions;
    }
    if (!options || typeof options !== "object") {
      throw new Error("Filed to parse configuration object. Bad configuration!");
    }
    return [{ immediatelyJoin: true, audioSource: false, ...options }, root];
  }

  get #apiBase() {
    const host = (this.#config.apiHost ?? DEFAULT_API_HOST).replace(/\/+$/, "");
    return `${host}/_sdk/v0`;
  }

  get #eventsUrl() {
    const url = new URL(`${this.#apiBase}/sessions/events`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.#config.sessionToken);
    return url.toString();
  }

  // -- lifecycle -----------------------------------------------------------------------------

  /** Looks the session up, joins it and resolves once the avatar's first frame is drawn. */
  init(config = {}) {
    if (this.inited) {
      return Promise.resolve();
    }
    if (!this.#initializing) {
      this.#initializing = this.#init(config).finally(() => {
        this.#initializing = null;
      });
    }
    return this.#initializing;
  }

  async #init({ timeout } = {}) {
    this.#startIdleTimeout();
    const ready = this.#whenReady();
    const work = (async () => {
      const data = await this.#request("GET", "/sessions");
      this.#sessionData = data;
      this.session_id = data.id;
      if (!this.#abortController.signal.aborted && this.#config.immediatelyJoin) {
        await this.join();
      }
      await ready;
    })();
    if (!(timeout > 0)) {
      return work;
    }
    let timer = 0;
    const deadline = new Promise((_, reject) => {
      // The official SDK rejects with this bare string, not an Error.
      timer = setTimeout(() => reject("Connection timeout"), timeout);
    });
    work.catch(() => {}); // the deadline may win the race; its rejection is reported instead
    try {
      await Promise.race([work, deadline]);
    } catch (error) {
      if (!this.inited) {
        this.#leave();
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Joins the session's event channel (the simulator's stand-in for the WebRTC room). */
  join() {
    if (!this.#sessionData) {
      return Promise.reject(new Error("Session not initialized"));
    }
    if (this.#socket && this.#socket.readyState === WebSocket.OPEN) {
      return Promise.resolve();
    }
    this.#joining ??= this.#connect().finally(() => {
      this.#joining = null;
    });
    return this.#joining;
  }

  async dispose() {
    this.#teardown("disposed");
  }

  #teardown(reason) {
    this.inited = false;
    for (const track of this.mediaStream.getTracks()) {
      track.stop();
    }
    this.mediaStream = new MediaStream();
    clearTimeout(this.#idleTimer);
    this.#idleTimer = 0;
    this.#stopAnimation();
    this.#voice?.close();
    this.#voice = null;
    if (this.#video) {
      this.#video.srcObject = null;
    }
    if (this.#canvas) {
      // a canvas' pixels are freed when it is collected, which may be much later: free them now
      this.#canvas.width = 0;
      this.#canvas.height = 0;
      this.#canvas = null;
      this.#face = null;
    }
    this.#leave();
    this.#ready?.reject(new Error("Disposed"));
    this.#ready = null;
    this.#abortController.abort();
    this.#abortController = new AbortController();
    // Like the official SDK, the DOM container stays where it was.
    this.#dispatch("dispose", { reason });
  }

  // -- speech --------------------------------------------------------------------------------

  async task(text) {
    if (!this.session_id) {
      throw new Error("It seems that the session is not initialized.");
    }
    this.#restartIdleTimeout();
    return this.#request("POST", "/sessions/tasks", { text });
  }

  async cancelAllTasks() {
    return this.#request("POST", "/sessions/cancel_all_speech_tasks");
  }

  async changeVoice(tts) {
    await this.#request("PATCH", "/sessions/config", {
      conversation_engine: { type: "text-echo", tts },
    });
  }

  updateConfig() {
    this.#send({ type: "conversation_engine.external.message.send", data: { prompt_update: true } });
  }

  // -- devices -------------------------------------------------------------------------------

  toggleLocalAudio(value) {
    this.#localAudio = value || !this.#localAudio;
    this.#dispatch("local_audio_change", this.#localAudio);
  }

  async setOutputDevice(device) {
    if (!this.#sessionData) {
      throw new Error("Session not initialized");
    }
    return { speaker: { deviceId: device?.outputDeviceId ?? "default" } };
  }

  async setInputDevices(devices) {
    return { mic: { deviceId: devices?.audioDeviceId ?? "default" }, camera: {} };
  }

  async requestMediaDevices() {
    const devices = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
    return { devices };
  }

  // -- events and display --------------------------------------------------------------------

  on(eventName, callback) {
    (this.#handlers[eventName] ??= []).push(callback);
  }

  off(eventName, callback) {
    if (this.#handlers[eventName]) {
      this.#handlers[eventName] = this.#handlers[eventName].filter((cb) => cb !== callback);
    }
  }

  attachDOMNode(node) {
    if (this.#root) {
      this.#root.innerHTML = "";
    }
    this.#root = node;
    this.#container = null;
    this.#drawUI();
  }

  #dispatch(eventName, payload) {
    this.#handlers[eventName]?.forEach((callback) => callback(payload));
  }

  /** Like the official SDK: a `<video>` playing `mediaStream`, in a closed shadow root. */
  #drawUI() {
    if (!this.#root || !this.inited || !this.#canvas) {
      return;
    }
    if (!this.#container) {
      const container = document.createElement("div");
      Object.assign(container.style, {
        width: "100%",
        height: "100%",
        position: "relative",
        overflow: "hidden",
      });
      this.#root.appendChild(container);
      this.#container = container.attachShadow({ mode: "closed" });
    }
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    Object.assign(video.style, { width: "100%", height: "100%", objectFit: "contain" });
    video.srcObject = this.mediaStream;
    video.play().catch(() => {}); // autoplay does it; a refused play() shows in the watchdog
    this.#video = video;
    this.#container.replaceChildren(video);
  }

  #ensureCanvas() {
    if (this.#canvas) {
      return;
    }
    const canvas = document.createElement("canvas");
    canvas.width = CANVAS_SIZE.width;
    canvas.height = CANVAS_SIZE.height;
    Object.assign(canvas.style, { width: "100%", height: "100%", objectFit: "contain" });
    this.#canvas = canvas;
    this.#face = new StandInFace(canvas);
  }

  #startStream() {
    const fps = Math.round(1000 / FRAME_MS);
    const stream = typeof this.#canvas.captureStream === "function" ? this.#canvas.captureStream(fps) : null;
    for (const track of stream ? stream.getVideoTracks() : []) {
      this.mediaStream.addTrack(track);
    }
    try {
      this.#voice = new StandInVoice();
      if (this.#voice.track) {
        this.mediaStream.addTrack(this.#voice.track);
      }
    } catch (error) {
      console.warn("[SDK]: no sound for the stand-in avatar:", error.message);
      this.#voice = null;
    }
    this.#animate();
  }

  /** The picture and the voice, a frame at a time (see FRAME_MS). */
  #animate() {
    this.#stopAnimation();
    this.#frameTimer = setInterval(() => this.#frame(performance.now()), FRAME_MS);
    this.#frame(performance.now());
  }

  #frame(now) {
    const face = this.#face;
    if (!face) {
      return;
    }
    if (this.#media.video !== "freeze") {
      face.draw(now); // a frozen picture keeps its last frame: the track sends nothing new
    }
    this.#voice?.level(this.#media.audio === "mute" ? 0 : face.mouth(now));
  }

  #stopAnimation() {
    if (this.#frameTimer) {
      clearInterval(this.#frameTimer);
      this.#frameTimer = 0;
    }
    this.#voice?.level(0);
  }

  // -- the event channel ---------------------------------------------------------------------

  #whenReady() {
    if (!this.#ready) {
      let resolve;
      let reject;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {}); // observed by init(); nothing else may be waiting
      this.#ready = { promise, resolve, reject };
    }
    return this.#ready.promise;
  }

  #connect() {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(this.#eventsUrl);
      this.#socket = socket;
      let opened = false;
      socket.addEventListener("open", () => {
        opened = true;
        this.#reconnectAttempt = 0;
        this.#onJoined();
        resolve();
      });
      socket.addEventListener("message", (event) => this.#onMessage(event.data));
      socket.addEventListener("close", (event) => {
        if (this.#socket !== socket) {
          if (!opened) {
            reject(new Error("Left the session"));
          }
          return; // a socket we left on purpose
        }
        this.#socket = null;
        if (!opened) {
          const error = new Error("Could not join the session: the event channel was refused");
          reject(error);
          this.#ready?.reject(error);
          return;
        }
        this.#onChannelClosed(event);
      });
    });
  }

  #leave() {
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = 0;
    const socket = this.#socket;
    this.#socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) {
      socket.close(1000, "left");
    }
  }

  #send(message) {
    if (this.#socket && this.#socket.readyState === WebSocket.OPEN) {
      this.#socket.send(JSON.stringify(message));
    }
  }

  #onJoined() {
    this.#ensureCanvas();
    this.#face.transparent = Boolean(this.#sessionData?.session_config?.uses_stacked_alpha);
    this.#face.notice = "";
    this.#frame(performance.now());
    if (this.inited) {
      return; // a reconnect: the avatar is already live
    }
    this.#startStream();
    this.inited = true;
    this.#drawUI();
    this.#ready?.resolve();
    this.#dispatch("init", { session_id: this.session_id });
  }

  #onMessage(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      console.warn("[SDK]: ignored a message that is not JSON");
      return;
    }
    if (!message || typeof message.type !== "string") {
      return;
    }
    this.#restartIdleTimeout();
    this.#updateFace(message);
    if (!INTERNAL_TYPES.has(message.type)) {
      this.#dispatch(message.type, message);
    }
  }

  #updateFace(message) {
    const face = this.#face;
    switch (message.type) {
      case "sim_caption":
        this.#captions.set(message.phrase_id, message.text);
        return;
      case "sim_media":
        this.#media = {
          video: ["freeze", "black"].includes(message.video) ? message.video : "none",
          audio: message.audio === "mute" ? "mute" : "none",
        };
        if (face) face.black = this.#media.video === "black";
        break;
      case "avatar_started_speaking":
        if (face) face.speaking = true;
        break;
      case "avatar_ended_speaking":
        if (face) face.speaking = false;
        break;
      case "avatar_started_speaking_phrase":
        if (face) face.caption = this.#captions.get(message.phrase_id) ?? "";
        break;
      case "avatar_ended_speaking_phrase":
        this.#captions.delete(message.phrase_id);
        if (face) face.caption = "";
        break;
      case "error":
        if (face) face.notice = message.message || message.code || "error";
        break;
      default:
        return;
    }
    this.#frame(performance.now());
  }

  #onChannelClosed(event) {
    if (SESSION_ENDED_CODES.has(event.code)) {
      this.#stopAnimation();
      if (this.#face) {
        this.#face.speaking = false;
        this.#face.caption = "";
        this.#face.notice ||= `Session ended (${event.reason || event.code})`;
        this.#frame(performance.now());
      }
      this.#teardown(event.reason || "session_ended");
      return;
    }
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    if (this.#reconnectAttempt >= RECONNECT_DELAYS_MS.length) {
      console.warn("[SDK]: the connection to the session was lost");
      this.#teardown("connection_lost");
      return;
    }
    const delay = RECONNECT_DELAYS_MS[this.#reconnectAttempt];
    this.#reconnectAttempt += 1;
    console.warn(`[SDK]: connection lost, reconnecting in ${delay} ms`);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = 0;
      this.#connect().catch(() => {
        if (this.inited) {
          this.#scheduleReconnect();
        }
      });
    }, delay);
  }

  // -- idle timer ----------------------------------------------------------------------------

  #startIdleTimeout() {
    clearTimeout(this.#idleTimer);
    const after = this.#config.idleTimeoutMs > 0 ? this.#config.idleTimeoutMs : IDLE_TIMEOUT_MS;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = 0;
      this.#dispatch("idle", { data: null });
      if (!this.#keepAlive) {
        console.info("[SDK_IDLE]: Stream was terminated due to inactivity");
        this.#teardown("idle");
      }
    }, after);
  }

  #restartIdleTimeout() {
    this.#startIdleTimeout();
  }

  // -- HTTP ----------------------------------------------------------------------------------

  async #request(method, path, body) {
    const headers = { "X-Session-Token": this.#config.sessionToken };
    const init = { method, headers, signal: this.#abortController.signal };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${this.#apiBase}${path}`, init);
    } catch (cause) {
      const aborted = cause && cause.name === "AbortError";
      throw new RequestError(aborted ? "canceled" : "Network Error", {
        code: aborted ? "ERR_CANCELED" : "ERR_NETWORK",
        cause,
      });
    }
    const data = parseBody(await response.text());
    if (!response.ok) {
      throw new RequestError(`Request failed with status code ${response.status}`, {
        code: response.status >= 500 ? "ERR_BAD_RESPONSE" : "ERR_BAD_REQUEST",
        response: {
          status: response.status,
          statusText: response.statusText,
          data,
          headers: Object.fromEntries(response.headers.entries()),
        },
      });
    }
    return data;
  }
}

export default AvaturnHead;
