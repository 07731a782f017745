// The host side of the page bridge. Injected by the app into an isolated script world (not the
// page's own world), after qwebchannel.js, at document creation. The page's scripts and the Web
// SDK never see `qt`.
//
// The stage script (stage.js) gets a private MessagePort to this script: once per document it
// dispatches CONNECT on the window, and the first such request is answered with a window message
// carrying the port. Only what arrives on that port reaches the app, and commands leave only
// through it, so a script in the page's main world that runs after the stage connected (an
// injected script, a library the SDK loads) can neither post events to the app nor read its
// commands. Python validates and rate-limits every message; this script only relays.
"use strict";

(() => {
  const CONNECT = "avaturn:connect";
  const PORT_MESSAGE = "avaturn:port";

  if (typeof qt === "undefined" || !qt.webChannelTransport) {
    return; // loaded outside the app: nothing to relay to
  }

  let host = null;
  const early = [];
  const channel = new MessageChannel();
  let connected = false;
  let refused = 0;

  function relay(message) {
    if (host === null) {
      early.push(message);
    } else {
      host.post(message);
    }
  }

  // Whatever arrives is handed on as a string; Python refuses what is not a JSON event.
  channel.port1.onmessage = (event) => relay(String(event.data));

  window.addEventListener(CONNECT, () => {
    if (connected) {
      refused += 1;
      if (refused === 1) {
        console.warn("the avatar page asked for a second bridge port; refused (only one)");
      }
      return;
    }
    connected = true;
    window.postMessage(PORT_MESSAGE, "*", [channel.port2]);
  });

  new QWebChannel(qt.webChannelTransport, (webChannel) => {
    host = webChannel.objects.bridge;
    host.command.connect((message) => {
      channel.port1.postMessage(String(message));
    });
    for (const message of early.splice(0)) {
      host.post(message);
    }
  });
})();
