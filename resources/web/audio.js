// Where the avatar's sound goes and how loud it is, and when its first frame was shown.
//
// Qt has no per-page audio device: inside the page, HTMLMediaElement.setSinkId chooses the
// output device of each media element (where Chromium supports it), and volume / muted are
// set on each element too. The settings are applied to every <audio> and <video> in the page,
// now and whenever the SDK adds one. The level is measured with a Web Audio AnalyserNode on the
// media's own stream (it does not reroute the sound) and reported a few times a second while
// there is sound to measure; a page whose media has no audio track reports nothing.

const LEVEL_INTERVAL_MS = 250;

export function createAudio(post, result) {
  let settings = { sink_id: "", volume: 1, muted: false };
  let observer = null;
  let meter = null; // { context, timer }

  const sinkSupported = () => typeof HTMLMediaElement.prototype.setSinkId === "function";
  const mediaElements = () => Array.from(document.querySelectorAll("audio, video"));

  async function apply() {
    let sinkError = null;
    for (const element of mediaElements()) {
      element.volume = settings.volume;
      element.muted = settings.muted;
      if (sinkSupported() && element.sinkId !== settings.sink_id) {
        try {
          await element.setSinkId(settings.sink_id);
        } catch (error) {
          sinkError = String((error && error.message) || error);
        }
      }
    }
    return sinkError;
  }

  async function devices() {
    try {
      const all = await navigator.mediaDevices.enumerateDevices();
      return all
        .filter((device) => device.kind === "audiooutput")
        .map((device) => ({ id: device.deviceId, label: device.label }));
    } catch {
      return [];
    }
  }

  async function output(command) {
    const volume = Number(command.volume);
    settings = {
      sink_id: typeof command.sink_id === "string" ? command.sink_id : "",
      volume: Number.isFinite(volume) ? Math.min(1, Math.max(0, volume)) : 1,
      muted: Boolean(command.muted),
    };
    const sinkError = await apply();
    result(command.ref, true, {
      data: {
        devices: await devices(),
        sink_supported: sinkSupported(),
        sink_error: sinkError,
        elements: mediaElements().length,
      },
    });
  }

  function reportFirstFrame(container) {
    const video = container.querySelector("video");
    const at = (source) => post({ type: "first_frame", source, at_ms: performance.now() });
    if (video && typeof video.requestVideoFrameCallback === "function") {
      video.requestVideoFrameCallback(() => at("video"));
    } else {
      requestAnimationFrame(() => requestAnimationFrame(() => at("paint")));
    }
  }

  function streamWithSound() {
    for (const element of mediaElements()) {
      let stream = element.srcObject instanceof MediaStream ? element.srcObject : null;
      if (stream === null && element.src && typeof element.captureStream === "function") {
        try {
          stream = element.captureStream();
        } catch {
          stream = null;
        }
      }
      if (stream && stream.getAudioTracks().length > 0) {
        return stream;
      }
    }
    return null;
  }

  function stopMeter() {
    if (meter !== null) {
      clearInterval(meter.timer);
      meter.context.close().catch(() => {});
      meter = null;
    }
  }

  function startMeter() {
    if (meter !== null) {
      return;
    }
    const stream = streamWithSound();
    if (stream === null) {
      return;
    }
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const sample of samples) {
        sum += sample * sample;
      }
      const level = Math.min(1, Math.sqrt(sum / samples.length) * Math.SQRT2);
      post({ type: "audio_level", level, at_ms: performance.now() });
    }, LEVEL_INTERVAL_MS);
    meter = { context, timer };
  }

  function stop() {
    stopMeter();
    if (observer !== null) {
      observer.disconnect();
      observer = null;
    }
  }

  // The avatar in `container` is live: its media gets the settings, its first frame and its
  // level are reported; all of it stops once the container leaves the page.
  function watch(container) {
    stop();
    apply();
    reportFirstFrame(container);
    startMeter();
    observer = new MutationObserver(() => {
      if (!container.isConnected) {
        stop();
        return;
      }
      apply();
      startMeter();
    });
    observer.observe(document.body, { childList: true, subtree: true });
  }

  return { output, watch, stop };
}
