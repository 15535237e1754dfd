// Keyboard shortcuts and time-on-task for the rater page.
(function () {
  let shownAt = performance.now();
  document.body.addEventListener("htmx:afterSwap", function () {
    shownAt = performance.now();
  });
  // Time on task travels as an ordinary form field of the judgment request.
  document.body.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.elt.closest && event.detail.elt.closest("#pair")) {
      event.detail.parameters.time_on_task_ms = Math.round(performance.now() - shownAt);
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
    const buttons = document.querySelectorAll("#pair .choices button[data-key]");
    for (const button of buttons) {
      if (button.dataset.key.split(" ").includes(event.key) && !button.disabled) {
        event.preventDefault();
        // A key pressed the instant a new pair arrives: make sure htmx owns the form
        // (process is idempotent), so the choice never falls back to a full-page submit.
        if (window.htmx) window.htmx.process(button.form);
        button.click();
        return;
      }
    }
  });
})();
