from services.core import protogen


def test_every_proto_compiles_to_its_import_path(tmp_path):
    written = protogen.generate(tmp_path)
    names = {str(path.relative_to(tmp_path)) for path in written}
    assert "services/mimi/mimi_pb2.py" in names
    assert "services/moshi_lm/moshi_lm_pb2_grpc.py" in names
    assert "services/dialogue/dialogue_pb2.py" in names
    assert "services/riva/riva_asr_pb2.py" in names  # protos/riva/, compiled under services/riva
    assert all(path.exists() for path in written)


def test_checked_in_stubs_are_fresh():
    # Fails when a .proto changed without `python -m services.core.protogen`.
    assert protogen.stale_stubs() == []
