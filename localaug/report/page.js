// report.html's explorer: the seed examples the teacher was asked about and what it wrote, filtered in the page.
// Every text from the run is set with textContent, never parsed as HTML: the teacher's output is untrusted.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var PAGE = 40; // seed examples drawn at a time: a run with 10,000 teacher examples stays quick
  var q = document.getElementById("q");
  var fRound = document.getElementById("f-round");
  var fFate = document.getElementById("f-fate");
  var list = document.getElementById("list");
  var more = document.getElementById("more");
  var countEl = document.getElementById("match-count");

  var groups = [];
  var kinds = {};
  var pending = false;
  DATA.rounds.forEach(function (r) {
    r.targets.forEach(function (t) {
      groups.push({ round: r.iteration, t: t });
      t.ex.forEach(function (x) {
        if (x.fate === "refused") kinds[x.kind] = (kinds[x.kind] || 0) + 1;
        if (x.fate === "pending") pending = true;
      });
    });
  });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function option(sel, value, label) { var o = el("option", null, label); o.value = value; sel.appendChild(o); }

  option(fRound, "all", "every iteration");
  DATA.rounds.forEach(function (r) { option(fRound, String(r.iteration), "iteration " + r.iteration); });
  option(fFate, "all", "every example");
  option(fFate, "kept", "kept");
  option(fFate, "refused", "refused (any reason)");
  Object.keys(kinds).sort().forEach(function (k) { option(fFate, "refused:" + k, "refused: " + k); });
  if (pending) option(fFate, "pending", "not through the filters yet");
  option(fFate, "none", "seed examples with no teacher example");

  function exText(x) {
    if (x._h === undefined) x._h = [x.text, x.answer, x.reason, x.id, x.detail || "", x.near || ""].join("\n").toLowerCase();
    return x._h;
  }
  function seedText(t) {
    if (t._h === undefined) t._h = [t.text, t.answer, t.pred, t.seed, t.detail || ""].join("\n").toLowerCase();
    return t._h;
  }
  function fateOk(x, fate) {
    if (fate === "all") return true;
    if (fate === "refused") return x.fate === "refused";
    if (fate.indexOf("refused:") === 0) return x.fate === "refused" && "refused:" + x.kind === fate;
    return x.fate === fate;
  }

  var matched = [];
  var drawn = 0;

  function apply() {
    var needle = q.value.trim().toLowerCase();
    var round = fRound.value;
    var fate = fFate.value;
    var nEx = 0;
    matched = [];
    groups.forEach(function (g) {
      if (round !== "all" && String(g.round) !== round) return;
      var seedHit = !needle || seedText(g.t).indexOf(needle) >= 0;
      if (fate === "none") {
        if (!g.t.ex.length && seedHit) matched.push({ g: g, ex: [] });
        return;
      }
      var ex = g.t.ex.filter(function (x) { return fateOk(x, fate) && (seedHit || exText(x).indexOf(needle) >= 0); });
      if (ex.length || (fate === "all" && seedHit)) { matched.push({ g: g, ex: ex }); nEx += ex.length; }
    });
    countEl.textContent = matched.length + " seed example" + (matched.length === 1 ? "" : "s") + ", " +
      nEx + " teacher example" + (nEx === 1 ? "" : "s") + " match.";
    countEl.dataset.seeds = String(matched.length);
    countEl.dataset.examples = String(nEx);
    countEl.dataset.query = q.value.trim(); // what the count is of (tests wait on it)
    list.textContent = "";
    drawn = 0;
    drawMore();
  }

  function drawMore() {
    var frag = document.createDocumentFragment();
    var end = Math.min(matched.length, drawn + PAGE);
    for (var k = drawn; k < end; k++) frag.appendChild(target(matched[k]));
    drawn = end;
    list.appendChild(frag);
    more.hidden = drawn >= matched.length;
    more.textContent = "show more (" + (matched.length - drawn) + " left)";
  }

  function target(m) {
    var t = m.g.t;
    var box = el("article", "target");
    box.dataset.round = String(m.g.round);
    box.appendChild(el("header", null, "iteration " + m.g.round + " · seed example " + t.seed +
      (t.ok ? " · the student got it right; the recipe targeted it (a low margin, or a random draw)" : "")));
    box.appendChild(el("div", "text", t.text));
    var ans = el("div", "answers");
    ans.appendChild(document.createTextNode("student: "));
    ans.appendChild(el("b", t.ok ? null : "wrong", t.pred || "(not judged)"));
    ans.appendChild(document.createTextNode(" · right answer: "));
    ans.appendChild(el("b", null, t.answer));
    box.appendChild(ans);
    if (t.detail) box.appendChild(details("worked solution", t.detail));
    var ul = el("ul", "written");
    m.ex.forEach(function (x) { ul.appendChild(written(x)); });
    if (!t.ex.length) ul.appendChild(el("li", "hidden-note", "The teacher wrote nothing for it (not asked in this iteration)."));
    else if (m.ex.length < t.ex.length) ul.appendChild(el("li", "hidden-note", (t.ex.length - m.ex.length) + " more hidden by the filter"));
    box.appendChild(ul);
    return box;
  }

  function written(x) {
    var li = el("li", "ex fate-" + x.fate);
    li.dataset.fate = x.fate === "refused" ? "refused:" + x.kind : x.fate;
    li.appendChild(el("span", "badge", x.fate === "refused" ? "refused: " + x.kind : x.fate === "kept" ? "kept" : "pending"));
    li.appendChild(el("span", "ex-text", x.text || "(empty)"));
    if (x.answer) { li.appendChild(document.createTextNode(" → ")); li.appendChild(el("b", null, x.answer)); }
    if (x.detail) li.appendChild(details("worked solution", x.detail));
    if (x.reason && !x.near) li.appendChild(el("div", "reason", x.reason));
    if (x.near) {
      var ref = DATA.refs[x.near];
      var near = el("div", "near", x.kind + ": " + (x.kind === "contaminated" ? "near " : "a copy of ") +
        (ref ? ref.role + " " : "") + x.near + (x.sim !== undefined ? " (similarity " + x.sim + ")" : "") + (ref ? ": " : ""));
      if (ref) near.appendChild(el("q", null, ref.text));
      li.appendChild(near);
    }
    return li;
  }

  function details(summary, text) {
    var d = el("details");
    d.appendChild(el("summary", null, summary));
    d.appendChild(el("pre", null, text));
    return d;
  }

  var timer = null;
  q.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 120); });
  fRound.addEventListener("change", apply);
  fFate.addEventListener("change", apply);
  more.addEventListener("click", drawMore);
  document.querySelectorAll("a[data-show-round]").forEach(function (a) {
    a.addEventListener("click", function () { fRound.value = a.dataset.showRound; fFate.value = "all"; apply(); });
  });
  apply();
  document.documentElement.dataset.ready = "1";
})();
