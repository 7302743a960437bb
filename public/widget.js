/*
 * Starling widget: lets a site's visitors lend their GPU, crediting the site's wallet.
 *
 *   <script src="https://RELAY/widget.js" data-site-wallet="st1…" data-intensity="0.3" async></script>
 *
 * Adds a small fixed card with an iframe of RELAY/widget. Nothing is computed until the
 * visitor presses Start inside it, and only while the card is fully visible: the frame
 * checks (IntersectionObserver v2) and holds work while the card is covered, faded,
 * shrunk or off-screen. The card has Stop, minimise and close. Plain JavaScript, no
 * build step, no dependencies.
 */
(function () {
  "use strict";
  var script = document.currentScript ||
    document.querySelector('script[src*="widget.js"][data-site-wallet]') ||
    document.querySelector('script[src*="widget.js"]');
  if (!script || window.__starlingWidget) return;
  window.__starlingWidget = true;

  var origin = new URL(script.src, location.href).origin;
  var site = script.getAttribute("data-site-wallet") || "";
  var intensity = parseFloat(script.getAttribute("data-intensity") || "0.3");
  if (!(intensity >= 0.1 && intensity <= 1)) intensity = 0.3;

  var url = origin + "/widget?site=" + encodeURIComponent(site) +
    "&intensity=" + encodeURIComponent(String(intensity));

  function mount() {
    var card = document.createElement("div");
    card.id = "starling-widget";
    card.setAttribute("role", "complementary");
    card.setAttribute("aria-label", "Starling volunteer computing");
    card.style.cssText = [
      "position:fixed", "right:16px", "bottom:16px", "z-index:2147483000",
      "width:min(340px, calc(100vw - 32px))", "height:280px",
      "border-radius:12px", "overflow:hidden", "box-shadow:0 8px 30px rgba(0,0,0,.35)",
      "background:#0f1320", "border:1px solid #2a3350"
    ].join(";");
    var frame = document.createElement("iframe");
    frame.src = url;
    frame.title = "Starling: lend your GPU to help this site";
    frame.setAttribute("data-testid", "starling-frame");
    frame.style.cssText = "border:0;width:100%;height:100%;display:block";
    // Delegate what the widget uses from a cross-origin frame: the GPU, the battery
    // level (to pause on low battery) and copying the wallet address.
    frame.allow = "webgpu; battery; clipboard-write";
    card.appendChild(frame);
    document.body.appendChild(card);
    // The visitor's minimise and close, from the frame's own buttons.
    window.addEventListener("message", function (event) {
      if (event.origin !== origin || event.source !== frame.contentWindow) return;
      if (event.data === "starling:minimise") card.style.height = "56px";
      else if (event.data === "starling:expand") card.style.height = "280px";
      else if (event.data === "starling:close" && card.parentNode) card.parentNode.removeChild(card);
    });
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
