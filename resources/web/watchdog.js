// The stage's watchdog: a heartbeat to the app, and a check of what the audience sees and hears.
//
// Once the app turns it on (the `watchdog` command, with its times), the page sends a
// `heartbeat` every `heartbeat_ms`: the app takes a missing one for a page that hangs. While an
// avatar is live it also samples the avatar's picture into a small canvas and listens to its
// sound with an AnalyserNode, every `sample_ms`, and reports what an audience would notice
// (`stage_problem`), and again when it is over (`cleared`):
//
//  - black: the picture is (nearly) black, or there is none, for `black_ms`;
//  - frozen: the picture does not change at all for `frozen_ms` (a live avatar always moves);
//  - silent: the avatar speaks (between its avatar_started_speaking and avatar_ended_speaking)
//    and yet its sound stays below a whisper for `silent_ms`.
//
// The media come from the SDK's public `mediaStream`, which the official SDK and the
// simulator's both fill (the official one plays it in a closed shadow root, out of the page's
// reach), or else from the <video> and <audio> elements under the avatar's root. Reading the
// frames of a MediaStream into a canvas is allowed (it does not taint the canvas), and the
// sound is only analysed, never played a second time. In a hidden page Chromium slows timers
// and stops painting, so the picture is not judged while the page is hidden.

const SAMPLE_WIDTH = 48;
const SAMPLE_HEIGHT = 27;
// Black: the mean brightness below BLACK_MEAN and no sample brighter than BLACK_MAX (0..255).
const BLACK_MEAN = 12;
const BLACK_MAX = 40;
// Silent: the sound's RMS (full scale 1) below this while the avatar speaks.
const SILENT_RMS = 0.003;
const PROBLEMS = ["black", "frozen", "silent"];

export function createWatchdog(post, { onProblems = () => {} } = {}) {
  let config = null;
  let heartbeatTimer = 0;
  let sampleTimer = 0;
  let seq = 0;
  let head = null; // the live AvaturnHead
  let root = null; // the element it was given
  let speaking = false;
  const problems = new Map(); // name -> detail
  const since = { black: null, frozen: null, silent: null };
  let reasons = { black: "", frozen: "", silent: "" };

  // the picture: a muted, detached <video> on the avatar's video track, drawn small (made
  // once for the page's life: new media elements and canvases for every session add up)
  let sampler = null; // { video, canvas, context, trackId, last }
  // the sound: an analyser on the avatar's audio track, in an AudioContext of the avatar's
  // own (closed when it goes, which frees its nodes and its audio thread at once)
  let listener = null; // { context, analyser, source, trackId, buffer }

  const visible = () => document.visibilityState !== "hidden";

  function heartbeat() {
    post({
      type: "heartbeat",
      seq: seq++,
      watching: head !== null,
      visible: visible(),
      problems: [...problems.keys()],
      at_ms: performance.now(),
    });
  }

  function configure(command) {
    config = {
      heartbeat_ms: command.heartbeat_ms,
      sample_ms: command.sample_ms,
      black_ms: command.black_ms,
      frozen_ms: command.frozen_ms,
      silent_ms: command.silent_ms,
    };
    clearInterval(heartbeatTimer);
    heartbeatTimer = setInterval(heartbeat, config.heartbeat_ms);
    heartbeat();
    if (head !== null) {
      startSampling();
    }
    return { heartbeat_ms: config.heartbeat_ms };
  }

  // -- what is wrong ----------------------------------------------------------------------------

  function raise(name, detail) {
    if (problems.has(name)) {
      return;
    }
    problems.set(name, detail);
    post({ type: "stage_problem", problem: name, cleared: false, detail, at_ms: performance.now() });
    onProblems(new Map(problems));
  }

  function clear(name) {
    since[name] = null;
    if (!problems.has(name)) {
      return;
    }
    const detail = problems.get(name);
    problems.delete(name);
    post({ type: "stage_problem", problem: name, cleared: true, detail, at_ms: performance.now() });
    onProblems(new Map(problems));
  }

  // `bad` now: start its clock (and keep the first reason), raise it once it ran `limit` ms
  function judge(name, bad, reason, now, limit) {
    if (!bad || !(limit > 0)) {
      clear(name);
      return;
    }
    if (since[name] === null) {
      since[name] = now;
      reasons[name] = reason;
    }
    if (now - since[name] >= limit) {
      raise(name, reasons[name]);
    }
  }

  // -- where the media are ----------------------------------------------------------------------

  function mediaElements() {
    return root === null ? [] : Array.from(root.querySelectorAll("video, audio"));
  }

  function liveTrack(kind) {
    const wanted = (track) => track.kind === kind && track.readyState === "live";
    const stream = head && head.mediaStream instanceof MediaStream ? head.mediaStream : null;
    const own = stream ? stream.getTracks().find(wanted) : undefined;
    if (own) {
      return own;
    }
    for (const element of mediaElements()) {
      const source = element.srcObject instanceof MediaStream ? element.srcObject : null;
      const found = source ? source.getTracks().find(wanted) : undefined;
      if (found) {
        return found;
      }
    }
    return null;
  }

  // -- the picture ------------------------------------------------------------------------------

  function frame(track) {
    if (sampler === null) {
      const canvas = document.createElement("canvas");
      canvas.width = SAMPLE_WIDTH;
      canvas.height = SAMPLE_HEIGHT;
      const video = document.createElement("video");
      video.muted = true;
      video.playsInline = true;
      sampler = {
        video,
        canvas,
        context: canvas.getContext("2d", { willReadFrequently: true }),
        trackId: null,
        last: null,
      };
    }
    if (sampler.trackId !== track.id) {
      sampler.trackId = track.id;
      sampler.last = null;
      sampler.video.srcObject = new MediaStream([track]);
      sampler.video.play().catch(() => {});
    }
    if (sampler.video.readyState < 2) {
      return null; // no frame yet
    }
    sampler.context.drawImage(sampler.video, 0, 0, SAMPLE_WIDTH, SAMPLE_HEIGHT);
    return sampler.context.getImageData(0, 0, SAMPLE_WIDTH, SAMPLE_HEIGHT).data;
  }

  function checkPicture(now) {
    if (!visible()) {
      since.black = null;
      since.frozen = null;
      if (sampler) {
        sampler.last = null;
      }
      return;
    }
    const track = liveTrack("video");
    const pixels = track ? frame(track) : null;
    if (pixels === null) {
      judge("black", true, track ? "the avatar's video shows no picture" : "the avatar has no video", now, config.black_ms);
      judge("frozen", false, "", now, config.frozen_ms);
      return;
    }
    let sum = 0;
    let max = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const luma = 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
      sum += luma;
      max = Math.max(max, luma);
    }
    const mean = sum / (pixels.length / 4);
    const black = mean < BLACK_MEAN && max < BLACK_MAX;
    judge("black", black, "the avatar's picture is black", now, config.black_ms);
    const last = sampler.last;
    let same = last !== null;
    if (same) {
      for (let i = 0; i < pixels.length; i += 1) {
        if (pixels[i] !== last[i]) {
          same = false;
          break;
        }
      }
    }
    sampler.last = pixels;
    // a black picture is black, not also frozen
    judge("frozen", same && !black, "the avatar's picture stopped moving", now, config.frozen_ms);
  }

  // -- the sound --------------------------------------------------------------------------------

  function level(track) {
    if (listener === null) {
      const context = new AudioContext();
      const analyser = context.createAnalyser();
      analyser.fftSize = 2048;
      listener = { context, analyser, source: null, trackId: null, buffer: new Float32Array(2048) };
    }
    if (listener.context.state === "suspended") {
      listener.context.resume().catch(() => {});
    }
    if (listener.trackId !== track.id) {
      listener.source?.disconnect();
      listener.source = listener.context.createMediaStreamSource(new MediaStream([track]));
      listener.source.connect(listener.analyser);
      listener.trackId = track.id;
    }
    listener.analyser.getFloatTimeDomainData(listener.buffer);
    let sum = 0;
    for (const value of listener.buffer) {
      sum += value * value;
    }
    return Math.sqrt(sum / listener.buffer.length);
  }

  function checkSound(now) {
    if (!(config.silent_ms > 0)) {
      clear("silent");
      return; // not checked: no analyser either
    }
    if (!speaking) {
      since.silent = null; // nothing to hear; a silence found before stands until it is heard
      return;
    }
    const track = liveTrack("audio");
    if (track === null) {
      judge("silent", true, "the avatar speaks but has no sound", now, config.silent_ms);
      return;
    }
    const quiet = !track.enabled || track.muted || level(track) < SILENT_RMS;
    judge("silent", quiet, "the avatar speaks but makes no sound", now, config.silent_ms);
  }

  // -- the avatar's life ------------------------------------------------------------------------

  function sample() {
    if (head === null || config === null) {
      return;
    }
    const now = performance.now();
    try {
      checkPicture(now);
      checkSound(now);
    } catch (error) {
      console.warn("the stage watchdog could not sample:", String((error && error.message) || error));
    }
  }

  function startSampling() {
    clearInterval(sampleTimer);
    sampleTimer = config === null ? 0 : setInterval(sample, config.sample_ms);
  }

  function watch(avatarHead, element) {
    unwatch();
    head = avatarHead;
    root = element;
    startSampling();
  }

  function unwatch() {
    clearInterval(sampleTimer);
    sampleTimer = 0;
    head = null;
    root = null;
    speaking = false;
    for (const name of PROBLEMS) {
      since[name] = null;
    }
    reasons = { black: "", frozen: "", silent: "" };
    if (problems.size) {
      problems.clear(); // the avatar went, and what was wrong with it; the app knows
      onProblems(new Map());
    }
    if (sampler !== null) {
      sampler.video.srcObject = null;
      sampler.video.load(); // drops the player of the old stream now, not at collection
      sampler.trackId = null;
      sampler.last = null;
    }
    if (listener !== null) {
      listener.source?.disconnect();
      listener.context.close().catch(() => {});
      listener = null;
    }
  }

  function setSpeaking(on) {
    speaking = Boolean(on);
  }

  return { configure, watch, unwatch, speaking: setSpeaking };
}
