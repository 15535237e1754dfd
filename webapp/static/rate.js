// The rater page: keyboard shortcuts, time on task, and a draft of what was typed.
(function () {
  let shownAt = performance.now();

  // --- Drafts: the Likert answers and the rationale of the pair on screen, kept per
  // assignment in sessionStorage, so a reload or back/forward restores them; cleared
  // once the server has accepted the judgment (the next pair or the end replaced it).
  function draftForm() {
    return document.querySelector("#pair form[data-draft-key]");
  }
  function draftSave(form) {
    const fields = {};
    for (const element of form.elements) {
      if (element.name === "rationale") fields.rationale = element.value;
      else if (element.type === "radio" && element.checked) fields[element.name] = element.value;
    }
    try {
      sessionStorage.setItem(form.dataset.draftKey, JSON.stringify(fields));
    } catch (error) { /* storage full or disabled: the page works without drafts */ }
  }
  function draftRestore(form) {
    let fields = null;
    try {
      fields = JSON.parse(sessionStorage.getItem(form.dataset.draftKey) || "null");
    } catch (error) { fields = null; }
    if (!fields) return;
    for (const element of form.elements) {
      if (element.name === "rationale" && !element.value && fields.rationale) {
        element.value = fields.rationale;
      } else if (element.type === "radio" && fields[element.name] === element.value &&
                 !form.querySelector(`input[name="${element.name}"]:checked`)) {
        element.checked = true;
      }
    }
  }
  // Drafts of pairs no longer on screen were submitted (or given up): forget them.
  function draftsForget(keep) {
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const key = sessionStorage.key(i);
      if (key && key.startsWith("draft:") && key !== keep) sessionStorage.removeItem(key);
    }
  }
  function pairShown() {
    const form = draftForm();
    if (form) draftRestore(form);
    // Only after a pair or the end came from the server: a page restored from the
    // back/forward cache is not a new pair.
    draftsForget(form ? form.dataset.draftKey : null);
  }
  document.addEventListener("input", function (event) {
    const form = event.target.closest && event.target.closest("form[data-draft-key]");
    if (form) draftSave(form);
  });
  document.addEventListener("change", function (event) {
    const form = event.target.closest && event.target.closest("form[data-draft-key]");
    if (form) draftSave(form);
  });
  pairShown();
  // Back/forward may show a page from the browser's cache: ask for the current one.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) window.location.reload();
  });

  let waiting = Boolean(document.querySelector("#waiting"));
  document.body.addEventListener("htmx:afterSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "pair") return;
    shownAt = performance.now();
    pairShown();
    // The clicked button is gone; move focus to the new pair so keyboard and screen-reader
    // users start from its prompt (or the message) instead of the top of the page. The
    // waiting page's polls keep the focus where it is.
    const wasWaiting = waiting;
    waiting = Boolean(document.querySelector("#waiting"));
    const next = document.querySelector("#message, #prompt-title, #done h2") ||
      (!wasWaiting && document.querySelector("#waiting h2"));
    if (next) {
      if (!next.hasAttribute("tabindex")) next.setAttribute("tabindex", "-1");
      next.focus({ preventScroll: false });
    }
  });
  // Time on task travels as an ordinary form field of the judgment request.
  document.body.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.elt.closest && event.detail.elt.closest("#pair form")) {
      event.detail.parameters.time_on_task_ms = Math.round(performance.now() - shownAt);
    }
  });

  // --- Keys. Voting keys (1 2 0 3, arrows, b) act only when the focus is not in a form
  // control: a focused radio keeps its arrows, and nothing typed ever votes. Likert keys
  // (q–t: response 1, y–p: response 2) act anywhere but in a text field, on the question
  // that holds the focus, else on the first one not fully answered.
  function inTextField(target) {
    return target && (target.tagName === "TEXTAREA" || target.isContentEditable ||
      (target.tagName === "INPUT" && target.type !== "radio" && target.type !== "checkbox"));
  }
  function inFormControl(target) {
    return target && (inTextField(target) || target.tagName === "INPUT" ||
      target.tagName === "SELECT");
  }
  function likertPress(key, target) {
    const focused = target && target.closest && target.closest("#pair fieldset.criterion");
    // Unanswered for this key's response (the radio group the key belongs to), not for the
    // question as a whole: r then w rates response 1 of the first question, then of the next.
    const fieldsets = focused ? [focused]
      : Array.from(document.querySelectorAll("#pair fieldset.criterion")).filter(function (f) {
        const radio = f.querySelector(`input[data-likert-key="${key}"]`);
        return radio && !f.querySelector(`input[name="${radio.name}"]:checked`);
      });
    for (const fieldset of fieldsets) {
      const radio = fieldset.querySelector(`input[data-likert-key="${key}"]`);
      if (radio) {
        radio.checked = true;
        radio.dispatchEvent(new Event("change", { bubbles: true }));
        return true;
      }
    }
    return false;
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (inTextField(target)) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (/^[qwertyuiop]$/.test(event.key) && likertPress(event.key, target)) {
      event.preventDefault();
      return;
    }
    if (inFormControl(target)) {
      if (event.key === "Escape") target.blur();
      return;
    }
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
