// Keyboard use of the work queue: j / k move to the next / previous referral card, "/" goes
// to the filters. Everything also works without this script (plain links and forms).
(function () {
  "use strict";
  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-card] h3 a"));
  }
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (target && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(target.tagName)) return;
    var links = cards();
    if (event.key === "/") {
      var first = document.querySelector(".filters select, .filters input");
      if (first) { event.preventDefault(); first.focus(); }
      return;
    }
    if ((event.key === "j" || event.key === "k") && links.length) {
      var at = links.indexOf(document.activeElement);
      var next = event.key === "j" ? at + 1 : (at < 0 ? 0 : at - 1);
      next = Math.max(0, Math.min(links.length - 1, next));
      event.preventDefault();
      links[next].focus();
      links[next].scrollIntoView({ block: "nearest" });
    }
  });
})();
