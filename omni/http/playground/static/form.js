// Small helpers the tabs share: reading fields and filling them from the model's card.

export function byId(id) {
  return document.getElementById(id);
}

// Fields left empty are not sent: the model's default applies, shown as the placeholder.
export function textField(body, name, id) {
  const value = byId(id).value.trim();
  if (value !== "") body[name] = value;
}

export function numberField(body, name, id) {
  const value = byId(id).value.trim();
  if (value !== "") body[name] = Number(value);
}

export function fillSizeField(prefix, model) {
  const input = byId(`${prefix}-size`);
  input.placeholder = model.defaults.size;
  const list = byId(`${prefix}-sizes`);
  list.replaceChildren(
    ...(model.sizes || []).map((size) => {
      const option = document.createElement("option");
      option.value = size;
      return option;
    }),
  );
  byId(`${prefix}-size-help`).textContent =
    `Default ${model.defaults.size}; sides are multiples of ${model.size_multiple}, ` +
    `at most ${model.max_side}.`;
}

export function placeholder(id, value) {
  byId(id).placeholder = value ?? "model default";
}
