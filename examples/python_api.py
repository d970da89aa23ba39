# yolokd, AGPL-3.0 License
"""Distil a narrow YOLOv8 student from a YOLOv8n teacher on the built-in synthetic data (offline, CPU-friendly).

Run from the repository root:  python examples/python_api.py
"""

from ultralytics import YOLO

from yolokd import YOLOKD
from yolokd.data.synthetic import make_dataset
from yolokd.demo import scaled_yaml

data = make_dataset("runs/example/data", n_train=200, n_val=50, n_test=50, imgsz=128)
student_yaml = scaled_yaml("runs/example/yolov8-pico.yaml", width=0.125)

# 1. a teacher: any trained Ultralytics detection checkpoint on the same classes
YOLO("yolov8n.yaml").train(
    data=str(data), epochs=3, imgsz=128, batch=16, project="runs/example", name="teacher", exist_ok=True
)

# 2. the student, distilled with CWD (cfg/methods/cwd.yaml); every ordinary YOLO train argument works
student = YOLOKD(str(student_yaml), teacher="runs/example/teacher/weights/best.pt", method="cwd")
student.train(data=str(data), epochs=3, imgsz=128, batch=16, project="runs/example", name="student", exist_ok=True)

# 3. the result is an ordinary Ultralytics model: val / predict / export as usual, with or without yolokd
metrics = YOLO("runs/example/student/weights/best.pt").val(data=str(data), split="test", imgsz=128)
print(f"student mAP50-95 on test: {metrics.box.map:.4f}")
