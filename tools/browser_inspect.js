// Run in each page by tools/browser_check.py once the page has loaded: waits for MathJax, the
// fonts and every image, then reports what a reader would see go wrong. Returns
// {problems: [[kind, detail]], links: [absolute file: URLs], ids: [element ids], screens: the page's
// height in windows, part: its part of the book (the sidebar's caption), figures: [[id, number]]
// of its numbered figures and tables, cites: the links but a caption's own permalink, url}.
(async () => {
  const problems = [];
  const describe = (el) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    if (typeof el.className === "string" && el.className.trim()) s += "." + el.className.trim().split(/\s+/).slice(0, 3).join(".");
    const text = (el.innerText || el.textContent || "").trim().replace(/\s+/g, " ");
    return text ? `${s} "${text.slice(0, 60)}"` : s;
  };

  // 1. typesetting, fonts and images have finished. MathJax may not have started when the page's
  // load event fires (on a busy machine): wait for it while the page loads MathJax or holds its
  // config (a page with TeX and no MathJax at all shows raw TeX at once: no wait).
  const started = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
  const loadsMathJax = !!document.querySelector("script[src*='mathjax' i]:not([src^='http']), script[id*='mathjax' i]");
  for (const t0 = Date.now(); (loadsMathJax || window.MathJax) && !started() && Date.now() - t0 < 30000;) {
    await new Promise((ok) => setTimeout(ok, 100));
  }
  if (started()) {
    await MathJax.startup.promise;
  }
  await document.fonts.ready;
  const images = Array.from(document.images);
  images.forEach((img) => { img.loading = "eager"; });
  await Promise.race([
    Promise.all(images.map((img) => (img.complete ? null : new Promise((ok) => { img.onload = img.onerror = ok; })))),
    new Promise((ok) => setTimeout(ok, 10000)),
  ]);
  for (const img of images) {
    if (!(img.complete && img.naturalWidth > 0)) problems.push(["image", `does not load: ${img.getAttribute("src")}`]);
    // a figure's image says what it shows to a reader who cannot see it (not its file name)
    const alt = (img.getAttribute("alt") || "").trim();
    if (img.closest("figure") && (!alt || /\.(png|svg|jpe?g|gif)$/i.test(alt))) problems.push(["alt", `no description: ${img.getAttribute("src")}`]);
  }

  // 2. raw TeX in the rendered text (code and MathJax's own output excluded)
  const skip = "script, style, pre, code, textarea, mjx-container, .highlight, .MathJax";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const text = node.textContent;
    for (const delim of ["\\(", "\\[", "$$", "\\begin{"]) {
      const at = text.indexOf(delim);
      if (at >= 0) {
        problems.push(["raw-tex", `${delim} in "${text.slice(Math.max(0, at - 30), at + 50).replace(/\s+/g, " ")}"`]);
        break;
      }
    }
  }

  // 3. nothing wider than the content column; nothing that scrolls sideways inside it
  const column = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
  const col = column.getBoundingClientRect();
  const allowed = ".margin, .sidebar, .full-width, .tag_margin, .tag_full-width, .tag_popout, .headerlink, .sr-only, .visually-hidden";
  const reported = [];
  const inside = (el) => reported.some((r) => r.contains(el));
  for (const el of column.querySelectorAll("*")) {
    if (el.closest(allowed) || inside(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.position === "fixed") continue;
    if (r.right > col.right + 1 || r.left < col.left - 1) {
      problems.push(["too-wide", `${describe(el)}: ${Math.round(r.width)} px, reaches ${Math.round(r.right - col.left)} px in a ${Math.round(col.width)} px column`]);
      reported.push(el);
    } else if (el.scrollWidth > el.clientWidth + 1 && ["auto", "scroll"].includes(style.overflowX)) {
      problems.push(["scrolls", `${describe(el)}: ${el.scrollWidth} px of content in a ${el.clientWidth} px box`]);
      reported.push(el);
    }
  }

  // 4. the local links and anchors, checked by the caller across pages
  const local = Array.from(document.querySelectorAll("a[href]")).filter((a) => a.href.startsWith("file:"));
  const links = local.map((a) => a.href);
  const ids = Array.from(document.querySelectorAll("[id]")).map((el) => el.id)
    .concat(Array.from(document.querySelectorAll("a[name]")).map((a) => a.name));
  // 5. how long the page is, which part of the book it is in, and what it numbers (checked by the caller)
  const screens = document.documentElement.scrollHeight / window.innerHeight;
  const current = document.querySelector("nav.bd-docs-nav li.toctree-l1.current");
  const caption = current && current.closest("ul") && current.closest("ul").previousElementSibling;
  const part = caption ? caption.textContent.trim() : "";
  const figures = Array.from(column.querySelectorAll("figure[id], table[id]"))
    .filter((el) => el.querySelector(":scope > figcaption .caption-number, :scope > caption .caption-number"))
    .map((el) => [el.id, (el.querySelector(".caption-number").textContent || "").trim()]);
  // a numbered table is cited by a link, or introduced by the text just before it (code cells
  // skipped: a sentence ending in a colon, or one that names a table); a table right after another
  // continues its run
  const introduced = (table) => {
    const block = table.closest("div.cell") || table.closest("div.output") || table;
    if (block !== table && block.querySelector("table") !== table) return true;  // after another in its cell
    for (let el = block.previousElementSibling; el; el = el.previousElementSibling) {
      if (el.matches("div.cell")) {  // code that computes it, or the table before it in a run
        if (el.querySelector("table")) return true;
        continue;
      }
      const text = (el.innerText || "").trim();
      if (!text) continue;
      return /:$/.test(text) || /\btables?\b/i.test(text);
    }
    return false;
  };
  const tables = Array.from(column.querySelectorAll("table .ood-table-number"))
    .map((n) => [n.id, n.textContent.trim(), introduced(n.closest("table"))]);
  const cites = local.filter((a) => !a.classList.contains("headerlink")).map((a) => a.href);
  return { problems, links, ids, screens, part, figures, tables, cites, url: location.href };
})()
