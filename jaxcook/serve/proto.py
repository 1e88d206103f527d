"""Protobuf messages of the Tinker wire format, built at import time from `tinker.proto`.

The `.proto` file is parsed here (the proto3 subset it uses: enums, messages, scalar, message
and enum fields, `repeated`, `optional`, `map<K, V>`, `oneof`) into a `FileDescriptorProto`,
added to a private descriptor pool (so it never clashes with another copy of the same schema,
such as the SDK's, in the default pool), and turned into message classes. No protoc and no
generated code: the schema file is the single source.

    from jaxcook.serve import proto
    msg = proto.ForwardBackwardRequest.FromString(body)
"""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO_FILE = Path(__file__).with_name("tinker.proto")

FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": FDP.TYPE_DOUBLE,
    "float": FDP.TYPE_FLOAT,
    "int32": FDP.TYPE_INT32,
    "int64": FDP.TYPE_INT64,
    "uint32": FDP.TYPE_UINT32,
    "uint64": FDP.TYPE_UINT64,
    "bool": FDP.TYPE_BOOL,
    "string": FDP.TYPE_STRING,
    "bytes": FDP.TYPE_BYTES,
}
_TOKEN = re.compile(r"map\s*<\s*\w+\s*,\s*\w+\s*>|[A-Za-z_][\w.]*|\d+|[{}=;]")


class ProtoSyntaxError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    text = re.sub(r"//[^\n]*", "", text)
    return _TOKEN.findall(text)


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def parse(text: str, *, name: str = "tinker.proto") -> descriptor_pb2.FileDescriptorProto:
    """The `FileDescriptorProto` of a proto3 file in the subset described above."""
    toks = _tokens(text)
    fdp = descriptor_pb2.FileDescriptorProto(name=name, syntax="proto3")
    # Enum names first: a field's type is an enum or a message, and both may be declared later.
    enums = {toks[i + 1] for i, t in enumerate(toks[:-1]) if t == "enum"}
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(toks):
            raise ProtoSyntaxError(f"{name}: unexpected end of file (expected {expected})")
        tok = toks[pos]
        if expected is not None and tok != expected:
            raise ProtoSyntaxError(f"{name}: expected {expected!r}, got {tok!r} (token {pos})")
        pos += 1
        return tok

    def set_type(field, type_name: str) -> None:
        if type_name in _SCALARS:
            field.type = _SCALARS[type_name]
        else:
            field.type = FDP.TYPE_ENUM if type_name in enums else FDP.TYPE_MESSAGE
            field.type_name = f".{fdp.package}.{type_name}"

    def parse_field(msg, label: str, type_name: str, oneof_index: int | None = None) -> None:
        field = msg.field.add(name=take())
        take("=")
        field.number = int(take())
        take(";")
        field.json_name = field.name[0] + _camel(field.name)[1:]
        if type_name.startswith("map"):
            key_t, value_t = re.match(r"map\s*<\s*(\w+)\s*,\s*(\w+)\s*>", type_name).groups()
            entry = msg.nested_type.add(name=_camel(field.name) + "Entry")
            entry.options.map_entry = True
            key = entry.field.add(name="key", number=1, label=FDP.LABEL_OPTIONAL, json_name="key")
            set_type(key, key_t)
            value = entry.field.add(name="value", number=2, label=FDP.LABEL_OPTIONAL, json_name="value")
            set_type(value, value_t)
            field.label, field.type = FDP.LABEL_REPEATED, FDP.TYPE_MESSAGE
            field.type_name = f".{fdp.package}.{msg.name}.{entry.name}"
            return
        set_type(field, type_name)
        field.label = FDP.LABEL_REPEATED if label == "repeated" else FDP.LABEL_OPTIONAL
        if oneof_index is not None:
            field.oneof_index = oneof_index
        elif label == "optional":  # proto3 optional: a synthetic one-field oneof
            field.proto3_optional = True
            field.oneof_index = len(msg.oneof_decl)
            msg.oneof_decl.add(name="_" + field.name)

    def parse_message() -> None:
        msg = fdp.message_type.add(name=take())
        take("{")
        while toks[pos] != "}":
            tok = take()
            if tok == "oneof":
                index = len(msg.oneof_decl)
                msg.oneof_decl.add(name=take())
                take("{")
                while toks[pos] != "}":
                    parse_field(msg, "", take(), index)
                take("}")
            elif tok in ("repeated", "optional"):
                parse_field(msg, tok, take())
            else:
                parse_field(msg, "", tok)
        take("}")
        # Move synthetic oneofs behind real ones (protobuf requires that order).
        real = [i for i, o in enumerate(msg.oneof_decl) if not o.name.startswith("_")]
        fake = [i for i, o in enumerate(msg.oneof_decl) if o.name.startswith("_")]
        order = {old: new for new, old in enumerate(real + fake)}
        decls = [descriptor_pb2.OneofDescriptorProto(name=msg.oneof_decl[i].name) for i in real + fake]
        del msg.oneof_decl[:]
        msg.oneof_decl.extend(decls)
        for f in msg.field:
            if f.HasField("oneof_index"):
                f.oneof_index = order[f.oneof_index]

    def parse_enum() -> None:
        enum = fdp.enum_type.add(name=take())
        take("{")
        while toks[pos] != "}":
            value = enum.value.add(name=take())
            take("=")
            value.number = int(take())
            take(";")
        take("}")

    while pos < len(toks):
        tok = take()
        if tok == "syntax":
            take("=")
            if take() != "proto3":
                raise ProtoSyntaxError(f"{name}: only proto3 is supported")
            take(";")
        elif tok == "package":
            fdp.package = take()
            take(";")
        elif tok == "message":
            parse_message()
        elif tok == "enum":
            parse_enum()
        else:
            raise ProtoSyntaxError(f"{name}: unexpected {tok!r} at top level (token {pos - 1})")
    return fdp


def build(path: Path = PROTO_FILE):
    """(message classes by name, enum values by name) from the `.proto` at `path`."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(parse(path.read_text(), name=path.name))
    file = pool.FindFileByName(path.name)
    classes = {n: message_factory.GetMessageClass(d) for n, d in file.message_types_by_name.items()}
    values = {v.name: v.number for e in file.enum_types_by_name.values() for v in e.values}
    return classes, values


MESSAGES, ENUM_VALUES = build()
ForwardBackwardRequest = MESSAGES["ForwardBackwardRequest"]
ForwardBackwardOutput = MESSAGES["ForwardBackwardOutput"]
SampleResponse = MESSAGES["SampleResponse"]
Tensor = MESSAGES["Tensor"]
DTYPE_FLOAT32, DTYPE_INT64, DTYPE_INT32 = (ENUM_VALUES[f"DTYPE_{t}"] for t in ("FLOAT32", "INT64", "INT32"))
STOP_REASON_STOP, STOP_REASON_LENGTH = ENUM_VALUES["STOP_REASON_STOP"], ENUM_VALUES["STOP_REASON_LENGTH"]
