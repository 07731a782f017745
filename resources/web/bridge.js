// The host side of the page bridge. Injected by the app into an isolated script world (not the
// page's own world), after qwebchannel.js, at document creation. The page's scripts and the Web
// SDK never see `qt`: they talk to this script through DOM CustomEvents whose `detail` is a JSON
// string. Python validates every message; this script only relays.
"use strict";

(() => {
  const TO_HOST = "avaturn:page-to-host";
  const TO_PAGE = "avaturn:host-to-page";

  if (typeof qt === "undefined" || !qt.webChannelTransport) {
    return; // loaded outside the app: nothing to relay to
  }

  let host = null;
  const early = [];

  // Listen at once, so that nothing the page says before the channel is up gets lost.
  window.addEventListener(TO_HOST, (event) => {
    const message = String(event.detail);
    if (host === null) {
      early.push(message);
    } else {
      host.post(message);
    }
  });

  new QWebChannel(qt.webChannelTransport, (channel) => {
    host = channel.objects.bridge;
    host.command.connect((message) => {
      window.dispatchEvent(new CustomEvent(TO_PAGE, { detail: String(message) }));
    });
    for (const message of early.splice(0)) {
      host.post(message);
    }
  });
})();
