"""onnxruntime's telemetry is switched off before any session is created."""
from opom_jax.runtimes import onnx_runtime


def test_telemetry_is_disabled_before_the_session_is_made(monkeypatch):
  events = []
  real_session = onnx_runtime.ort.InferenceSession

  def session(*args, **kwargs):
    events.append("session")
    return real_session(*args, **kwargs)

  monkeypatch.setattr(onnx_runtime.ort, "disable_telemetry_events",
                      lambda: events.append("disable_telemetry"))
  monkeypatch.setattr(onnx_runtime.ort, "InferenceSession", session)
  target = onnx_runtime.faceplugin_runtime()
  assert events == ["disable_telemetry", "session"]
  assert target.session.get_inputs()[0].name == target.input_name
