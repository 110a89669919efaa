"""Test doubles and sample data that ship with the package, for instvl's tests and projects built on it.

    media       synthetic clips with known boxes; MP4, PNG, JPEG (EXIF-rotated too) bytes
    datasets    make_sample, write_dataset (the real UnitWriter, a mutate(row) hook), rows_by_id
    oracle      ground-truth Detector and Tracker, ground_truth_from_instances
    components  require_component: skip a test whose real component is missing, fail it under CI=true
    browser     headless Chromium for the HTML instvl writes
    labelstudio a throwaway Label Studio server and a scripted reviewer
    fixtures    the pytest plugin: pytest_plugins = ["instvl.testing.fixtures"]
"""
