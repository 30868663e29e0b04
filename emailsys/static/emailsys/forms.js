// Forms a person can fill (emailsys/forms.py): repeatable rows, searchable selects, a segment rule's live count and
// a template's live preview. A static file because the Content-Security-Policy allows no inline script; every
// form works without it (the widgets render blank rows and plain selects; counts and previews show on save).
(function () {
  "use strict";

  function csrfToken(element) {
    const form = element.closest("form");
    const input = form && form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // Posts `fields` to `url` after `delay` ms of quiet; only the newest answer is shown (`show(answer, ok)`).
  function debouncedPost(url, token, show, delay) {
    let timer = null;
    let sequence = 0;
    return function (fields) {
      clearTimeout(timer);
      timer = setTimeout(function () {
        const mine = ++sequence;
        const body = new URLSearchParams(fields);
        fetch(url, {
          method: "POST",
          body: body,
          credentials: "same-origin",
          headers: { "X-CSRFToken": token, Accept: "application/json" },
        })
          .then(function (response) {
            return response.json().then(function (answer) { return [answer, response.ok]; });
          })
          .then(function (result) { if (mine === sequence) { show(result[0], result[1]); } })
          .catch(function (error) { if (mine === sequence) { show({ detail: String(error) }, false); } });
      }, delay);
    };
  }

  // --- repeatable rows ------------------------------------------------------------------------------------
  function setUpRepeatRows(list) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button repeat-add";
    button.textContent = list.dataset.repeatAdd || "Add another";
    button.addEventListener("click", function () {
      const rows = list.querySelectorAll(".repeat-row");
      const row = rows[rows.length - 1].cloneNode(true);
      const count = rows.length + 1;
      row.querySelectorAll("input").forEach(function (input) {
        input.value = "";
        const label = input.getAttribute("aria-label") || "";
        input.setAttribute("aria-label", label.replace(/\d+$/, String(count)));
      });
      list.appendChild(row);
      row.querySelector("input").focus();
    });
    list.insertAdjacentElement("afterend", button);
  }

  // --- searchable selects ---------------------------------------------------------------------------------
  function normalise(text) { return text.toLowerCase().replace(/[_\s/]+/g, " ").trim(); }

  function setUpSearchableSelect(select) {
    const search = document.createElement("input");
    search.type = "search";
    search.className = "select-search";
    search.placeholder = "Search " + (select.dataset.searchable || "") + "s…";
    search.setAttribute("aria-label", "Search " + (select.dataset.searchable || "options"));
    search.addEventListener("input", function () {
      const wanted = normalise(search.value);
      let first = null;
      let keep = false;
      Array.from(select.options).forEach(function (option) {
        const match = !wanted || normalise(option.value).includes(wanted);
        option.hidden = !match;
        if (match && first === null) { first = option; }
        if (match && option.selected) { keep = true; }
      });
      if (!keep && first !== null) {
        select.value = first.value;
        select.dispatchEvent(new Event("change", { bubbles: true }));
      }
    });
    select.insertAdjacentElement("beforebegin", search);
  }

  // --- a segment rule's live count ------------------------------------------------------------------------
  function setUpRuleCount(textarea) {
    const output = document.getElementById(textarea.id + "_live_count");
    if (!output) { return; }
    const form = textarea.closest("form");
    const slug = form.querySelector("input[name=slug]");
    const show = function (answer, ok) {
      output.classList.toggle("rule-error", !ok);
      if (ok) {
        output.textContent = answer.count + " matching contact" + (answer.count === 1 ? "" : "s") + " now" +
          (answer.sample && answer.sample.length ? " (e.g. " + answer.sample.join(", ") + ")" : "");
      } else {
        output.textContent = (answer.errors || [answer.detail || "Cannot count."]).join(" ");
      }
    };
    const post = debouncedPost(textarea.dataset.countUrl, csrfToken(textarea), show, 400);
    const send = function () {
      output.textContent = "Counting…";
      post({ rule: textarea.value, slug: slug ? slug.value : "" });
    };
    textarea.addEventListener("input", send);
    send();
  }

  // --- a template's live preview --------------------------------------------------------------------------
  function setUpTemplatePreview(panel) {
    const form = document.querySelector("form#emailtemplate_form");
    if (!form) { return; }
    const parts = ["subject", "body_text", "body_html"];
    const status = panel.querySelector(".preview-status");
    const subject = panel.querySelector(".preview-subject");
    const text = panel.querySelector(".preview-text");
    const frame = panel.querySelector("iframe.preview-html");
    const show = function (answer, ok) {
      panel.classList.toggle("preview-failed", !ok);
      if (!ok) {
        status.textContent = answer.error || answer.detail || "Cannot preview.";
        return;
      }
      status.textContent = answer.note;
      subject.textContent = answer.subject;
      text.textContent = answer.text || "—";
      frame.hidden = !answer.html;
      frame.srcdoc = answer.html || "";
    };
    const post = debouncedPost(panel.dataset.previewUrl, csrfToken(form), show, 350);
    const send = function () {
      const fields = {};
      parts.forEach(function (name) {
        const input = form.querySelector("[name=" + name + "]");
        fields[name] = input ? input.value : "";
      });
      status.textContent = "Rendering…";
      post(fields);
    };
    parts.forEach(function (name) {
      const input = form.querySelector("[name=" + name + "]");
      if (input) { input.addEventListener("input", send); }
    });
    send();
  }

  function setUp() {
    document.querySelectorAll("ul.repeat-rows[data-repeat-add]").forEach(setUpRepeatRows);
    document.querySelectorAll("select[data-searchable]").forEach(setUpSearchableSelect);
    document.querySelectorAll("textarea[data-count-url]").forEach(setUpRuleCount);
    document.querySelectorAll("[data-preview-url]").forEach(setUpTemplatePreview);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
