// TEST DOUBLE of the Web SDK's `AvaturnHead`, used only by tests/web to drive the stage page
// without the simulator or the official SDK. It has the same public shape (constructor, on/off,
// init, task, cancelAllTasks, changeVoice, dispose) and emits the same event names.
//
// Behaviour switches, by session token:
//   "hang" -> init() rejects with "Connection timeout" after its timeout
//   "gone" -> init() rejects like axios with a 404 and a FastAPI detail
//   "flood" -> once live, emits FLOOD speech events at once (a broken or hostile SDK)
//   "media" -> once live, plays a moving picture and a tone in a <video> under its root (no
//              `mediaStream` property: the stage's watchdog must find the element), driven from
//              the page's main world by `window.fakeMedia` (speak, freeze, black, mute)
// changeVoice() accepts only KNOWN_VOICES and otherwise rejects like axios with a 400.

const KNOWN_VOICES = new Set(["voice-a", "voice-b"]);
const PHRASE_MS = 20;
const FLOOD = 1000;

let taskCounter = 0;

function httpError(status, detail) {
  const error = new Error(`Request failed with status code ${status}`);
  error.response = { status, data: { detail } };
  return error;
}

// A picture that moves and a tone that sounds while "speaking", as a real avatar's media.
function playMedia(head) {
  const canvas = document.createElement("canvas");
  canvas.width = 64;
  canvas.height = 36;
  const g = canvas.getContext("2d");
  const state = { frozen: false, black: false, muted: false, speaking: false, n: 0 };
  const context = new AudioContext();
  const tone = context.createOscillator();
  const gain = context.createGain();
  gain.gain.value = 0;
  const out = context.createMediaStreamDestination();
  tone.connect(gain).connect(out);
  tone.start();
  setInterval(() => {
    if (!state.frozen) {
      state.n += 1;
      g.fillStyle = state.black ? "#000" : `rgb(${40 + (state.n * 7) % 200}, 120, 160)`;
      g.fillRect(0, 0, 64, 36);
    }
    gain.gain.value = state.speaking && !state.muted ? 0.3 : 0;
  }, 40);
  const video = document.createElement("video");
  video.className = "fake-media";
  video.autoplay = true;
  video.srcObject = new MediaStream([
    ...canvas.captureStream(25).getVideoTracks(),
    ...out.stream.getAudioTracks(),
  ]);
  head.root.append(video);
  window.fakeMedia = {
    speak(on) {
      state.speaking = on;
      head.emit(on ? "avatar_started_speaking" : "avatar_ended_speaking");
    },
    freeze(on) {
      state.frozen = on;
    },
    black(on) {
      state.black = on;
    },
    mute(on) {
      state.muted = on;
    },
  };
}

export class AvaturnHead {
  constructor(root, options) {
    this.root = root;
    this.options = { ...options };
    this.handlers = new Map();
    this.queue = [];
    this.speaking = false;
    this.timer = null;
    this.session_id = "";
  }

  on(name, callback) {
    if (!this.handlers.has(name)) {
      this.handlers.set(name, new Set());
    }
    this.handlers.get(name).add(callback);
  }

  off(name, callback) {
    this.handlers.get(name)?.delete(callback);
  }

  emit(name, payload) {
    for (const callback of this.handlers.get(name) ?? []) {
      callback(payload);
    }
  }

  async init({ timeout } = {}) {
    const token = this.options.sessionToken;
    if (token === "hang") {
      await new Promise((_, reject) => {
        setTimeout(() => reject(new Error("Connection timeout")), timeout);
      });
    }
    if (token === "gone") {
      throw httpError(404, "Session not found");
    }
    const picture = document.createElement("canvas");
    picture.className = "fake-avatar";
    picture.dataset.keepAlive = String(this.options.keepAlive);
    picture.dataset.immediatelyJoin = String(this.options.immediatelyJoin);
    this.root.append(picture);
    this.session_id = "fake-session";
    this.emit("init");
    if (token === "media") {
      playMedia(this);
    }
    if (token === "flood") {
      setTimeout(() => {
        for (let i = 0; i < FLOOD; i += 1) {
          this.emit(i % 2 ? "avatar_ended_speaking" : "avatar_started_speaking");
        }
      }, 0);
    }
  }

  async task(text) {
    taskCounter += 1;
    const taskId = `fake-task-${taskCounter}`;
    this.queue.push({ taskId, text });
    this.pump();
    return { task_id: taskId };
  }

  pump() {
    if (this.speaking || this.queue.length === 0) {
      return;
    }
    const { taskId } = this.queue.shift();
    this.speaking = true;
    this.emit("avatar_started_speaking");
    this.emit("avatar_started_speaking_phrase", { phrase_id: taskId });
    this.timer = setTimeout(() => {
      this.timer = null;
      this.emit("avatar_ended_speaking_phrase", { phrase_id: taskId });
      this.emit("avatar_ended_speaking");
      this.speaking = false;
      this.pump();
    }, PHRASE_MS);
  }

  async cancelAllTasks() {
    const dropped = this.queue.length + (this.speaking ? 1 : 0);
    this.queue = [];
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.speaking) {
      this.speaking = false;
      this.emit("avatar_ended_speaking");
    }
    return { cancelled: dropped };
  }

  async changeVoice({ engine, voice_id: voiceId }) {
    if (engine !== "elevenlabs" || !KNOWN_VOICES.has(voiceId)) {
      throw httpError(400, `Unknown voice_id: ${voiceId}`);
    }
    await this.cancelAllTasks();
  }

  async dispose() {
    await this.cancelAllTasks();
    this.emit("dispose");
    // Like the real SDK, leaves its DOM behind.
  }
}
