// Keyboard shortcuts and time-on-task for the rater page.
(function () {
  let shownAt = performance.now();
  document.body.addEventListener("htmx:afterSwap", function () {
    shownAt = performance.now();
    // The clicked button is gone; move focus to the new pair so keyboard and screen-reader
    // users start from its prompt (or the end message) instead of the top of the page.
    const next = document.querySelector("#prompt-title, #done h2");
    if (next) {
      if (!next.hasAttribute("tabindex")) next.setAttribute("tabindex", "-1");
      next.focus({ preventScroll: false });
    }
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
    // Typing in the rationale must not vote (Esc leaves the box); radio buttons (Likert)
    // still let keys through.
    if (target && (target.tagName === "TEXTAREA" || target.isContentEditable ||
        (target.tagName === "INPUT" && target.type !== "radio" && target.type !== "checkbox"))) {
      if (event.key === "Escape") target.blur();
      return;
    }
    // Arrow keys move within a Likert radio group; only digits/letters vote from there.
    if (target && target.type === "radio" && event.key.startsWith("Arrow")) return;
    const buttons = document.querySelectorAll("#pair .choices button[data-key]");
    for (const button of buttons) {
      if (button.dataset.key.split(" ").includes(event.key) && !button.disabled) {
        event.preventDefault();
        // A key pressed the instant a new pair arrives: make sure htmx owns the form
        // (process is idempotent), so the choice never falls back to a full-page submit.
        if (window.htmx) window.htmx.process(button.form);
        if (button.form.reportValidity && !button.form.reportValidity()) return;
        button.click();
        return;
      }
    }
  });
})();
