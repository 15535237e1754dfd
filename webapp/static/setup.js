// The new-study page's condition builder: remove a built condition, and say so, so that the
// pair count follows. Adding goes through htmx (hx-post on the builder's buttons).
(function () {
  document.body.addEventListener("click", function (event) {
    const button = event.target.closest("[data-remove-condition]");
    if (!button) return;
    button.closest("li").remove();
    document.body.dispatchEvent(new CustomEvent("conditions-changed"));
  });
  // A built condition's fields stay filled in for the next one; the name does not.
  document.body.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target.id !== "built-list") return;
    const name = document.getElementById("b_name");
    if (name) name.value = "";
    const error = document.getElementById("builder-error");
    if (error) error.textContent = "";
  });
})();
