// Progressive enhancement for image models: a canvas to draw on. Without JavaScript the file
// upload works on its own; with it, the drawing is sent as a PNG in the hidden image_data field.
(function () {
  "use strict";
  var box = document.querySelector("[data-draw]");
  if (!box) { return; }
  var canvas = box.querySelector("canvas");
  var field = box.querySelector("input[name=image_data]");
  var form = box.closest("form");
  var ctx = canvas.getContext("2d");
  var drawing = false;
  var dirty = false;
  box.hidden = false;

  function reset() {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "#111111";
    ctx.lineWidth = canvas.width / 7;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    dirty = false;
    field.value = "";
  }

  function point(e) {
    var r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  }

  canvas.addEventListener("pointerdown", function (e) {
    drawing = true;
    canvas.setPointerCapture(e.pointerId);
    var p = point(e);
    ctx.beginPath();
    ctx.moveTo(p[0], p[1]);
    ctx.lineTo(p[0] + 0.1, p[1] + 0.1);
    ctx.stroke();
    dirty = true;
    e.preventDefault();
  });
  canvas.addEventListener("pointermove", function (e) {
    if (!drawing) { return; }
    var p = point(e);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
    e.preventDefault();
  });
  ["pointerup", "pointercancel", "pointerleave"].forEach(function (name) {
    canvas.addEventListener(name, function () { drawing = false; });
  });
  box.querySelector("[data-clear]").addEventListener("click", reset);
  form.addEventListener("submit", function () {
    if (dirty) { field.value = canvas.toDataURL("image/png"); }
  });
  reset();
})();
