// Tables: a plain one, and one that filters, sorts and pages (by asking the server,
// or over a list it is given) so that 10,000 rows are never all on the page.

function cell(row, column) {
  const td = document.createElement("td");
  if (column.numeric) td.className = "num";
  const value = column.render ? column.render(row) : row[column.key];
  if (value instanceof Node) td.append(value);
  else td.textContent = value === null || value === undefined ? "" : String(value);
  return td;
}

// A <table> of `rows` with `columns` ([{key, label, numeric, render(row)}]).
export function table(columns, rows, empty = "none") {
  if (!rows.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = empty;
    return p;
  }
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c.label;
    if (c.numeric) th.className = "num";
    head.append(th);
  }
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const c of columns) tr.append(cell(row, c));
  }
  return t;
}

// A filterable, sortable, paged table in `root`.  `fetchPage({page, pageSize, sort,
// reverse, name})` answers {items, page, page_count, filtered_count, total_count}.
export class PagedTable {
  constructor(root, { columns, fetchPage, pageSize = 50, sort = "name", what = "rows", onError }) {
    this.columns = columns;
    this.fetchPage = fetchPage;
    this.state = { page: 1, pageSize, sort, reverse: false, name: "" };
    this.onError = onError || (() => {});
    this.busy = null;
    this.again = false;

    const bar = document.createElement("div");
    bar.className = "toolbar";
    this.filter = document.createElement("input");
    this.filter.type = "search";
    this.filter.placeholder = `filter ${what} by name`;
    this.filter.setAttribute("aria-label", `filter ${what} by name`);
    let timer = 0;
    this.filter.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        this.state.name = this.filter.value;
        this.state.page = 1;
        this.refresh();
      }, 250);
    });
    bar.append(this.filter);

    this.table = document.createElement("table");
    const head = this.table.createTHead().insertRow();
    this.headers = columns.map((c) => {
      const th = document.createElement("th");
      th.textContent = c.label;
      th.dataset.key = c.key;
      if (c.numeric) th.classList.add("num");
      if (c.sortable) {
        th.classList.add("sortable");
        th.tabIndex = 0;
        const sortBy = () => {
          if (this.state.sort === c.key) this.state.reverse = !this.state.reverse;
          else {
            this.state.sort = c.key;
            this.state.reverse = !!c.numeric; // biggest first
          }
          this.state.page = 1;
          this.refresh();
        };
        th.addEventListener("click", sortBy);
        th.addEventListener("keydown", (e) => {
          if (e.key === "Enter") sortBy();
        });
      }
      head.append(th);
      return th;
    });
    this.body = this.table.createTBody();

    const pager = document.createElement("div");
    pager.className = "pager";
    this.prev = document.createElement("button");
    this.prev.type = "button";
    this.prev.textContent = "\u2190 previous";
    this.prev.addEventListener("click", () => this.go(this.state.page - 1));
    this.next = document.createElement("button");
    this.next.type = "button";
    this.next.textContent = "next \u2192";
    this.next.addEventListener("click", () => this.go(this.state.page + 1));
    this.info = document.createElement("span");
    this.info.className = "muted";
    pager.append(this.prev, this.next, this.info);

    root.replaceChildren(bar, this.table, pager);
  }

  go(page) {
    this.state.page = Math.max(1, page);
    this.refresh();
  }

  // Ask for the page the state names and show it; a call while one is under way asks
  // again once it is done (a click is never lost, a stale answer never shown).
  async refresh() {
    if (this.busy) {
      this.again = true;
      return this.busy;
    }
    this.busy = (async () => {
      do {
        this.again = false;
        const asked = { ...this.state };
        try {
          const answer = await this.fetchPage(asked);
          if (this.again) continue;
          this.state.page = answer.page;
          this.render(answer);
        } catch (e) {
          this.onError(e);
        }
      } while (this.again);
    })();
    try {
      await this.busy;
    } finally {
      this.busy = null;
    }
  }

  render(answer) {
    const s = this.state;
    for (const th of this.headers) {
      th.classList.remove("sorted-up", "sorted-down");
      if (th.dataset.key === s.sort) th.classList.add(s.reverse ? "sorted-down" : "sorted-up");
    }
    const rows = answer.items.map((item) => {
      const tr = document.createElement("tr");
      for (const c of this.columns) tr.append(cell(item, c));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = this.columns.length;
      td.className = "empty";
      td.textContent = answer.total_count ? "nothing matches the filter" : "none";
      tr.append(td);
      rows.push(tr);
    }
    this.body.replaceChildren(...rows);
    this.prev.disabled = answer.page <= 1;
    this.next.disabled = answer.page >= answer.page_count;
    const filtered = answer.filtered_count !== answer.total_count
      ? ` (${answer.filtered_count} of ${answer.total_count} match)` : ` (${answer.total_count})`;
    this.info.textContent = `page ${answer.page} of ${answer.page_count}${filtered}`;
  }
}

// fetchPage over a list held here (for a list the API does not page).
export function pageOf(rows, { page, pageSize, sort, reverse, name }, nameOf) {
  const total = rows.length;
  let kept = name ? rows.filter((r) => nameOf(r).includes(name)) : rows.slice();
  if (sort) {
    kept.sort((a, b) => (a[sort] < b[sort] ? -1 : a[sort] > b[sort] ? 1 : 0));
    if (reverse) kept.reverse();
  }
  const count = Math.max(1, Math.ceil(kept.length / pageSize));
  const p = Math.min(Math.max(1, page), count);
  return {
    items: kept.slice((p - 1) * pageSize, p * pageSize),
    page: p,
    page_count: count,
    filtered_count: kept.length,
    total_count: total,
  };
}
