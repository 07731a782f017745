// The avatar stage: loads the Web SDK (the official one, or the simulator's stand-in with the
// same API), runs one AvaturnHead at a time and forwards its events to the app.
//
// The app talks to this page only through a private MessagePort that bridge.js (in its isolated
// script world) hands over once per document: commands arrive on it, events and results leave
// on it, always as JSON strings. The session token arrives with the `init` command; it is handed
// to the SDK and never logged or shown.

// The stage's own modules (run first, as imports do; they patch no built-in).
import { createAttract } from "./attract.js";
import { createWatchdog } from "./watchdog.js";

// Taken before any other script runs in this page (the SDK is imported later, and the page's
// Content-Security-Policy allows no other script): code that patches these built-ins afterwards
// cannot reach the bridge port through them.
const { apply } = Reflect;
const { stringify, parse } = JSON;
const portPost = MessagePort.prototype.postMessage;
const messageData = Object.getOwnPropertyDescriptor(MessageEvent.prototype, "data").get;

const CONNECT = "avaturn:connect";
const PORT_MESSAGE = "avaturn:port";
const SPEECH_EVENTS = [
  "avatar_started_speaking",
  "avatar_ended_speaking",
  "avatar_started_speaking_phrase",
  "avatar_ended_speaking_phrase",
];
// Extra time the page gives init() beyond its own timeout, in case the SDK ignores it.
const INIT_GRACE_MS = 2000;

const ui = {
  root: document.getElementById("avatar-root"),
  placeholder: document.getElementById("placeholder"),
  status: document.getElementById("status"),
  message: document.getElementById("message"),
};

let avatar = null; // the live AvaturnHead, or null
let sdkHost = null; // the element the live avatar was given (the SDK leaves it behind)
let initRef = null; // ref of the init that is running, or null
let generation = 0; // bumped by every dispose; stale callbacks compare and drop themselves
let disposing = false;

let port = null; // the bridge's port, once handed over
const outbox = []; // what the page said before it had the port

function post(message) {
  const text = stringify(message);
  if (port === null) {
    outbox.push(text);
  } else {
    apply(portPost, port, [text]);
  }
}

function result(ref, ok, { error = null, data = null } = {}) {
  post({ type: "result", ref, ok, error, data });
}

// -- what the viewer sees ----------------------------------------------------------------------

function showPlaceholder() {
  ui.placeholder.hidden = false;
  ui.status.hidden = true;
}

function showStatus(text) {
  ui.placeholder.hidden = true;
  ui.status.textContent = text;
  ui.status.hidden = false;
}

function showAvatar() {
  ui.placeholder.hidden = true;
  ui.status.hidden = true;
}

function showMessage(text) {
  ui.message.textContent = text;
  ui.message.hidden = false;
}

function clearMessage() {
  ui.message.textContent = "";
  ui.message.hidden = true;
}

// -- helpers ------------------------------------------------------------------------------------

// A readable message for any thrown value. For axios-style errors the server's `detail`
// (FastAPI shape: a string, or a list of {msg}) wins over the generic "Request failed" text.
function describeError(error) {
  const response = error && typeof error === "object" ? error.response : undefined;
  const status = response && typeof response.status === "number" ? response.status : null;
  let detail = response && response.data ? response.data.detail : undefined;
  if (Array.isArray(detail)) {
    detail = detail
      .map((item) => (item && typeof item === "object" ? item.msg : item))
      .filter(Boolean)
      .join("; ");
  }
  if (typeof detail === "string" && detail) {
    return { message: detail, status, detail };
  }
  let message;
  if (error instanceof Error || (error && typeof error.message === "string")) {
    message = error.message || error.name || "unknown error";
  } else {
    message = String(error);
  }
  return { message, status, detail: null };
}

// A JSON-safe copy of what an SDK call returned (an axios response is reduced to its data).
function plain(value) {
  if (value && typeof value === "object" && "data" in value && typeof value.status === "number") {
    value = value.data;
  }
  if (value === undefined) {
    return null;
  }
  try {
    return JSON.parse(JSON.stringify(value));
  } catch {
    return null;
  }
}

function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function phraseIdOf(payload) {
  const id = payload && typeof payload === "object" ? payload.phrase_id ?? payload.phraseId : payload;
  return id === undefined || id === null ? null : String(id);
}

// The SDK's `error` event, from either shape: the service's app message nests the details,
// `{type: "error", error: {type: "session_lifecycle_error", code, message, session_id}}`; the
// simulator's is flat, `{type: "error", code, message, reason}`.
function errorFields(payload) {
  const text = (value) => (typeof value === "string" && value ? value.slice(0, 2000) : null);
  const outer = payload && typeof payload === "object" ? payload : {};
  const nested = outer.error && typeof outer.error === "object";
  const inner = nested ? outer.error : outer;
  return {
    code: text(inner.code) ?? "internal_error",
    message: text(inner.message) ?? text(typeof payload === "string" ? payload : null) ?? "",
    reason: text(inner.reason) ?? text(outer.reason),
    kind: nested ? text(inner.type) : null,
  };
}

function sessionIdOf(head, answer) {
  // The SDK's public `session_id` property; the other places are fallbacks.
  const candidates = [
    head.session_id,
    answer && answer.session_id,
    answer && answer.id,
    head.sessionId,
  ];
  const found = candidates.find((value) => typeof value === "string" && value);
  return found || "";
}

function removeSdkHost() {
  if (sdkHost !== null) {
    sdkHost.remove();
    sdkHost = null;
  }
  ui.root.replaceChildren();
}

async function quietDispose(head) {
  try {
    await head.dispose();
  } catch (error) {
    console.warn("avatar dispose failed:", describeError(error).message);
  }
}

function subscribe(head, gen) {
  const live = () => gen === generation;
  const on = (name, handler) => {
    try {
      head.on(name, (payload) => {
        if (live()) {
          handler(payload);
        }
      });
    } catch (error) {
      console.info(`the SDK has no '${name}' event:`, describeError(error).message);
    }
  };
  for (const name of SPEECH_EVENTS) {
    on(name, (payload) => {
      if (name === "avatar_started_speaking" || name === "avatar_ended_speaking") {
        watchdog.speaking(name === "avatar_started_speaking");
      }
      const event = { type: name, at_ms: performance.now() };
      if (name.endsWith("_phrase")) {
        event.phrase_id = phraseIdOf(payload);
      }
      post(event);
    });
  }
  on("idle", () => post({ type: "idle", at_ms: performance.now() }));
  on("error", (payload) => {
    post({ type: "sdk_error", ...errorFields(payload), at_ms: performance.now() });
  });
  on("dispose", (payload) => {
    if (disposing || head !== avatar) {
      return; // our own dispose, or an init that never went live
    }
    // The SDK ended the avatar by itself (idle without keepAlive, session over, ...).
    generation += 1;
    avatar = null;
    watchdog.unwatch();
    removeSdkHost();
    showPlaceholder();
    const reason = payload && payload.reason ? String(payload.reason) : "ended by the Web SDK";
    post({ type: "disposed", reason, at_ms: performance.now() });
  });
}

// -- the watchdog and the attract screen (watchdog.js, attract.js) -----------------------------

// The app's own styles for both (a stylesheet of the stage: its policy allows no inline style).
const kioskStyles = document.createElement("link");
kioskStyles.rel = "stylesheet";
kioskStyles.href = "kiosk.css";
document.head.append(kioskStyles);

const alertBadge = document.createElement("div");
alertBadge.className = "watchdog-alert";
alertBadge.hidden = true;
ui.root.parentElement.append(alertBadge);

const PROBLEM_WORDS = { black: "no picture", frozen: "picture frozen", silent: "no sound" };

const watchdog = createWatchdog(post, {
  onProblems(problems) {
    const words = [...problems.keys()].map((name) => PROBLEM_WORDS[name] ?? name);
    alertBadge.textContent = words.length ? `Stage: ${words.join(", ")}` : "";
    alertBadge.hidden = words.length === 0;
  },
});
const attract = createAttract(ui.root.parentElement);

// -- commands -----------------------------------------------------------------------------------

async function init(command) {
  if (initRef !== null) {
    result(command.ref, false, { error: "An avatar is already connecting." });
    return;
  }
  if (avatar !== null) {
    result(command.ref, false, { error: "An avatar is already live; dispose it first." });
    return;
  }
  initRef = command.ref;
  const gen = generation;
  clearMessage();
  showStatus("Connecting to the avatar…");
  try {
    let module;
    try {
      module = await withTimeout(
        import(command.sdk_url),
        command.timeout_ms,
        "loading the Web SDK timed out",
      );
    } catch (error) {
      const reason = describeError(error).message;
      console.error("the Web SDK could not be loaded:", reason);
      if (gen === generation) {
        showPlaceholder();
        showMessage(`The avatar software could not be loaded (${reason}).`);
      }
      post({ type: "sdk_failed", message: reason });
      return;
    }
    const AvaturnHead = module.AvaturnHead ?? (module.default && module.default.AvaturnHead);
    if (typeof AvaturnHead !== "function") {
      const reason = "the module does not export AvaturnHead";
      showPlaceholder();
      showMessage(`The avatar software could not be loaded (${reason}).`);
      post({ type: "sdk_failed", message: reason });
      return;
    }
    post({ type: "sdk_loaded" });
    if (gen !== generation) {
      showPlaceholder();
      post({ type: "init_failed", message: "Connecting was cancelled.", timed_out: false });
      return;
    }

    const container = document.createElement("div");
    container.className = "sdk-host";
    ui.root.append(container);
    let head;
    let answer;
    try {
      head = new AvaturnHead(container, {
        sessionToken: command.token,
        apiHost: command.api_host,
        keepAlive: command.keep_alive,
        immediatelyJoin: true,
      });
      subscribe(head, gen);
      answer = await withTimeout(
        head.init({ timeout: command.timeout_ms }),
        command.timeout_ms + INIT_GRACE_MS,
        "Connection timeout",
      );
    } catch (error) {
      const reason = describeError(error).message;
      const timedOut = reason === "Connection timeout";
      if (head) {
        await quietDispose(head);
      }
      container.remove();
      if (gen === generation) {
        showPlaceholder();
        showMessage(
          timedOut
            ? `The avatar did not connect within ${Math.round(command.timeout_ms / 1000)} s.`
            : `The avatar could not connect (${reason}).`,
        );
      }
      post({ type: "init_failed", message: reason, timed_out: timedOut });
      return;
    }
    if (gen !== generation) {
      // disposed while connecting: do not leave a live avatar behind
      await quietDispose(head);
      container.remove();
      post({ type: "init_failed", message: "Connecting was cancelled.", timed_out: false });
      return;
    }
    avatar = head;
    sdkHost = container;
    showAvatar();
    post({ type: "inited", session_id: sessionIdOf(head, answer) });
    watchdog.watch(head, container);
    audio.watch(container);
  } finally {
    initRef = null;
  }
}

function liveAvatar() {
  if (avatar === null) {
    throw new Error("No avatar is live.");
  }
  return avatar;
}

async function dispose(command) {
  generation += 1; // also cancels an init that is still running
  const head = avatar;
  avatar = null;
  watchdog.unwatch();
  if (head !== null) {
    disposing = true;
    try {
      await quietDispose(head);
    } finally {
      disposing = false;
    }
  }
  removeSdkHost();
  showPlaceholder();
  if (head !== null) {
    post({ type: "disposed", reason: null, at_ms: performance.now() });
  }
  result(command.ref, true);
}

async function run(command, call) {
  try {
    const data = await call();
    result(command.ref, true, { data: plain(data) });
  } catch (error) {
    const { message, status, detail } = describeError(error);
    result(command.ref, false, { error: message, data: { status, detail } });
  }
}

// The stage's look and the app's captions live in look.js.
import { lookHandlers } from "./look.js";

// Where the sound goes, its level, and the first frame (see audio.js).
import { createAudio } from "./audio.js";

const audio = createAudio(post, result);

const handlers = {
  audio_output: (command) => audio.output(command),
  init,
  task: (command) => run(command, () => liveAvatar().task(command.text)),
  cancel_all: (command) => run(command, () => liveAvatar().cancelAllTasks()),
  change_voice: (command) =>
    run(command, () =>
      liveAvatar().changeVoice({ engine: "elevenlabs", voice_id: command.voice_id }),
    ),
  dispose,
  watchdog: (command) => run(command, () => watchdog.configure(command)),
  attract: (command) => run(command, () => attract.show(command)),
  // fire and forget: nobody waits for an answer (the page's messages to the app are rationed)
  look: lookHandlers.look,
  caption: lookHandlers.caption,
};

function onCommand(event) {
  let command;
  try {
    command = parse(String(apply(messageData, event, [])));
  } catch {
    console.error("a command that is not JSON was ignored");
    return;
  }
  const handler = command && Object.hasOwn(handlers, command.type) ? handlers[command.type] : null;
  if (!handler) {
    console.error("an unknown command was ignored:", String(command && command.type));
    if (command && Number.isInteger(command.ref)) {
      result(command.ref, false, { error: "unknown command" });
    }
    return;
  }
  handler(command).catch((error) => {
    console.error(`command ${command.type} failed:`, describeError(error).message);
    if (Number.isInteger(command.ref)) {
      result(command.ref, false, { error: describeError(error).message });
    }
  });
}

// The handshake with bridge.js: ask once, take the first port offered, then speak only on it.
function onPort(event) {
  if (event.source !== window || event.data !== PORT_MESSAGE || event.ports.length !== 1) {
    return;
  }
  window.removeEventListener("message", onPort);
  port = event.ports[0];
  port.onmessage = onCommand;
  for (const text of outbox.splice(0)) {
    apply(portPost, port, [text]);
  }
}

window.addEventListener("message", onPort);
window.dispatchEvent(new CustomEvent(CONNECT));

window.addEventListener("pagehide", () => {
  generation += 1;
  watchdog.unwatch();
  if (avatar !== null) {
    quietDispose(avatar);
    avatar = null;
  }
});

showPlaceholder();
post({ type: "ready", time_origin_ms: performance.timeOrigin });
