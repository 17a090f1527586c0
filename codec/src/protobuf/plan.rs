//! The decode plan: a message descriptor bound to a table schema.
//!
//! Built once per stream by [`Plan::new`], which checks every descriptor
//! field against the table column of the same name and picks, per field,
//! the operation that turns its wire value into a value of the column's
//! Arrow type. The plan mirrors the table: one [`Node`] per struct level
//! (the root, each nested message column, each list-of-message element,
//! each map entry), each with a dense field-number lookup table, and one
//! column builder slot per leaf column, in typed arenas (all `Int64`
//! columns share one `Vec`, and so on) so that the decode loop reaches a
//! column with one index and no dynamic dispatch.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use super::ops::{Op, Src32, Src64};
use super::schema::{WellKnown, well_known};
use super::wire::WireType;
use crate::error::{Error, Result};

/// Deepest message nesting the decoder accepts (also the deepest table).
pub const MAX_DEPTH: usize = 64;
/// Field numbers below this are found through a dense table; above, by
/// binary search.
const DENSE_LIMIT: u32 = 4096;

/// Index of a [`Node`] in [`Plan::nodes`]; the root is 0.
pub(crate) type NodeId = u32;
/// Index of an error path in [`Plan::paths`].
pub(crate) type PathId = u32;

/// The compiled form of a descriptor bound to a table.
#[derive(Debug)]
pub(crate) struct Plan {
    pub nodes: Vec<Node>,
    /// Field paths (`.meta.ts`) for error messages.
    pub paths: Vec<Box<str>>,
    /// Enum value names, for enums stored as strings.
    pub enums: Vec<EnumNames>,
    /// How many columns each typed arena holds.
    pub counts: Counts,
}

/// The number of builder slots of each kind.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    pub i32s: u32,
    pub i64s: u32,
    pub u32s: u32,
    pub u64s: u32,
    pub f32s: u32,
    pub f64s: u32,
    pub bools: u32,
    pub bytes: u32,
    pub structs: u32,
    pub lists: u32,
    pub maps: u32,
    pub timestamps: u32,
    /// Columns in the shared buffer of the root's 64-bit values (see
    /// [`Shape::Wide`]).
    pub wide: u32,
}

/// One struct level: the root, a nested message column, a list-of-message
/// element or a map entry.
#[derive(Debug)]
pub(crate) struct Node {
    /// Error path of the message itself (framing errors inside it).
    pub path: PathId,
    /// Field number -> index into `fields` plus one; 0 means unknown.
    pub lookup: Vec<u16>,
    /// (field number, index) for numbers beyond the dense table, sorted.
    pub sparse: Vec<(u32, u16)>,
    pub fields: Vec<FieldPlan>,
    /// The table's columns at this level, in table order.
    pub children: Vec<Child>,
    /// Validity builder of this level's struct column, if it is one.
    pub struct_col: Option<u32>,
    /// Singular fields, whose absence must be handled at row end.
    pub n_singular: u32,
    /// Whether some field needs work at every row end even when all
    /// singular fields were seen (lists, maps, nested messages).
    pub close_always: bool,
    /// Number of (non-synthetic) oneofs.
    pub n_oneofs: u16,
    /// The fields' expected tags, in field-number order: the decode loop
    /// first checks whether the next bytes are the tag of the field that
    /// usually comes next, skipping varint decoding and the lookup table.
    pub fast: Vec<FastTag>,
    /// Whether every fast-path field is a `string` or a root-level
    /// `double` or `int64` ([`FastKind::WideF64`], [`FastKind::WideI64`]);
    /// the decode loop then runs a variant with only those cases.
    pub lean: bool,
}

/// A field's tag as it appears on the wire, for the guess-the-next-field
/// fast path. Tags of one or two bytes (field numbers below 2048) qualify.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastTag {
    /// The tag bytes, little-endian (second byte 0 for one-byte tags).
    tag: u16,
    /// Which bits of the next two bytes to compare (0 when not eligible).
    mask: u16,
    /// Tag length in bytes.
    pub len: u8,
    /// The wire type the tag encodes.
    pub wire: WireType,
    /// What to do when the tag matches, without looking at the field plan.
    pub kind: FastKind,
    /// Column slot for the scalar kinds.
    pub col: u32,
}

/// The common singular scalar fields (no oneof), which the decode loop
/// handles from the [`FastTag`] alone; everything else is `Generic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FastKind {
    Generic,
    /// `double` into `Float64`.
    F64,
    /// `float` into `Float32`.
    F32,
    /// `int64` into `Int64` (or a `Timestamp` taken as is).
    I64,
    /// `double` into a [`Shape::Wide`] column.
    WideF64,
    /// `int64` into a [`Shape::Wide`] column.
    WideI64,
    /// `int32` into `Int32` (or `Date32`).
    I32,
    Bool,
    Utf8,
    Binary,
}

impl FastKind {
    /// The fast kind of a field, with its column slot.
    fn of(field: &FieldPlan) -> (FastKind, u32) {
        if !matches!(field.card, Card::Singular) || field.oneof.is_some() {
            return (FastKind::Generic, 0);
        }
        match field.op {
            Op::F64 { col } => (FastKind::F64, col),
            Op::WideF64 { slot } => (FastKind::WideF64, slot),
            Op::WideI64 {
                slot,
                src: Src64::VarI64,
            } => (FastKind::WideI64, slot),
            Op::F32 { col } => (FastKind::F32, col),
            Op::I64 {
                col,
                src: Src64::VarI64,
            } => (FastKind::I64, col),
            Op::I32 {
                col,
                src: Src32::Var,
                lo: i32::MIN,
                hi: i32::MAX,
            } => (FastKind::I32, col),
            Op::Bool { col } => (FastKind::Bool, col),
            Op::Utf8 { col } => (FastKind::Utf8, col),
            Op::Binary { col } => (FastKind::Binary, col),
            _ => (FastKind::Generic, 0),
        }
    }
}

impl FastTag {
    fn new(number: u32, wire: WireType) -> Self {
        let t = (number << 3) | wire as u32;
        let (tag, mask, len) = if t < 0x80 {
            (t as u16, 0x00ff, 1)
        } else if t < 0x4000 {
            (
                ((t & 0x7f) | 0x80) as u16 | (((t >> 7) as u16) << 8),
                0xffff,
                2,
            )
        } else {
            (1, 0, 0)
        };
        FastTag {
            tag,
            mask,
            len,
            wire,
            kind: FastKind::Generic,
            col: 0,
        }
    }

    /// Whether `buf` starts with this tag.
    #[inline(always)]
    pub fn matches(&self, buf: &[u8]) -> bool {
        match *buf {
            [a, b, ..] => u16::from_le_bytes([a, b]) & self.mask == self.tag,
            [a] => self.len == 1 && u16::from(a) == self.tag,
            [] => false,
        }
    }
}

impl Node {
    /// The index of the field with this number, if the message has one.
    #[inline(always)]
    pub fn find(&self, number: u32) -> Option<usize> {
        match self.lookup.get(number as usize) {
            Some(&0) => None,
            Some(&i) => Some(usize::from(i) - 1),
            None => self
                .sparse
                .binary_search_by_key(&number, |&(n, _)| n)
                .ok()
                .map(|k| usize::from(self.sparse[k].1)),
        }
    }
}

/// A table column at some level, and where its values are built.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub field: FieldRef,
    pub shape: Shape,
}

/// Where the values of one column are built.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    I32(u32),
    I64(u32),
    U32(u32),
    U64(u32),
    F32(u32),
    F64(u32),
    /// A root-level `Float64`, `Int64` or `Timestamp` column of a singular
    /// field outside any oneof, in the shared buffer of such columns
    /// ([`super::columns::Wide`]): its values are stored at their row
    /// index, as the root has exactly one row per record.
    Wide(u32),
    Bool(u32),
    Bytes(u32),
    Struct(NodeId),
    List {
        list: u32,
        elem: Box<Shape>,
    },
    Map {
        map: u32,
        entry: NodeId,
    },
    /// A table column the descriptor lacks: all nulls.
    Null,
}

/// One descriptor field bound to its column.
#[derive(Debug)]
pub(crate) struct FieldPlan {
    pub path: PathId,
    /// Wire type of one value (for packed lists, of one element).
    pub wire: WireType,
    pub card: Card,
    /// How one value is read and stored.
    pub op: Op,
    /// The column (for lists and maps, the whole list or map column).
    pub shape: Shape,
    pub absent: Absent,
    /// Index of the oneof the field belongs to.
    pub oneof: Option<u16>,
    /// Position in [`Node::fast`] of the field expected after this one: the
    /// next by number, or this one again for unpacked lists.
    pub next: u32,
}

/// Singular, list or map.
#[derive(Debug)]
pub(crate) enum Card {
    Singular,
    /// `packable`: scalar numeric elements may also come packed.
    Repeated {
        list: u32,
        packable: bool,
    },
    Map {
        map: u32,
        entry: NodeId,
    },
}

/// What an absent singular field becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// The proto3 default (implicit presence; map keys and values).
    Default,
    /// Null (the field has presence and the column is nullable).
    Null,
    /// An error: proto2 `required`.
    Required,
    /// An error: the field has presence but the column is not nullable.
    NonNullable,
}

/// Enum number -> name, for enums stored in string columns.
#[derive(Debug)]
pub(crate) struct EnumNames {
    min: i32,
    dense: Vec<Option<Box<str>>>,
    sparse: Vec<(i32, Box<str>)>,
    pub default: Box<str>,
}

impl EnumNames {
    fn new(e: &prost_reflect::EnumDescriptor) -> Self {
        let mut values: Vec<(i32, Box<str>)> = Vec::new();
        for v in e.values() {
            if !values.iter().any(|(n, _)| *n == v.number()) {
                let name = e
                    .get_value(v.number())
                    .map_or_else(|| v.name().into(), |d| d.name().into());
                values.push((v.number(), name));
            }
        }
        values.sort_by_key(|(n, _)| *n);
        let min = values.first().map_or(0, |(n, _)| *n);
        let span = values
            .last()
            .map_or(0, |(n, _)| i64::from(*n) - i64::from(min) + 1);
        let default = e.default_value().name().into();
        if span <= 1024 {
            let mut dense = vec![None; span as usize];
            for (n, name) in values {
                dense[(i64::from(n) - i64::from(min)) as usize] = Some(name);
            }
            EnumNames {
                min,
                dense,
                sparse: Vec::new(),
                default,
            }
        } else {
            EnumNames {
                min,
                dense: Vec::new(),
                sparse: values,
                default,
            }
        }
    }

    /// The name of a value, if the enum defines it.
    #[inline]
    pub fn get(&self, number: i32) -> Option<&str> {
        if !self.dense.is_empty() {
            let i = i64::from(number) - i64::from(self.min);
            return self.dense.get(usize::try_from(i).ok()?)?.as_deref();
        }
        let k = self
            .sparse
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()?;
        Some(&self.sparse[k].1)
    }
}

impl Plan {
    /// Binds `message` to the table columns `table`.
    pub fn new(message: &MessageDescriptor, table: &Fields) -> Result<Plan> {
        let mut plan = Plan {
            nodes: Vec::new(),
            paths: Vec::new(),
            enums: Vec::new(),
            counts: Counts::default(),
        };
        let bindings = bind_by_name(message, table, "")?;
        plan.message(message, table, bindings, "", None, false, 0)?;
        Ok(plan)
    }

    fn path(&mut self, path: &str) -> PathId {
        self.paths.push(path.into());
        (self.paths.len() - 1) as PathId
    }

    /// Plans one struct level. `bindings[i]` is the descriptor field bound
    /// to table column `i`, if any.
    #[expect(clippy::too_many_arguments, reason = "one recursive planning step")]
    fn message(
        &mut self,
        message: &MessageDescriptor,
        table: &Fields,
        bindings: Vec<Option<FieldDescriptor>>,
        prefix: &str,
        struct_col: Option<u32>,
        map_entry: bool,
        depth: usize,
    ) -> Result<NodeId> {
        if depth > MAX_DEPTH {
            return Err(Error::incompatible_field(
                prefix,
                format!("nested deeper than {MAX_DEPTH}"),
            ));
        }
        let id = self.nodes.len() as NodeId;
        let path = self.path(prefix);
        self.nodes.push(Node {
            path,
            lookup: Vec::new(),
            sparse: Vec::new(),
            fields: Vec::new(),
            children: Vec::new(),
            struct_col,
            n_singular: 0,
            close_always: false,
            n_oneofs: 0,
            fast: Vec::new(),
            lean: false,
        });
        let oneofs: Vec<String> = message
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| o.full_name().to_owned())
            .collect();
        let mut fields = Vec::new();
        let mut children = Vec::new();
        let mut numbers = Vec::new();
        let mut fast_wires = Vec::new();
        for (column, bound) in table.iter().zip(bindings) {
            let Some(fd) = bound else {
                if !column.is_nullable() {
                    return Err(Error::incompatible_field(
                        format!("{prefix}.{}", column.name()),
                        NO_SUCH_FIELD,
                    ));
                }
                children.push(Child {
                    field: Arc::clone(column),
                    shape: Shape::Null,
                });
                continue;
            };
            let path = format!("{prefix}.{}", fd.name());
            let oneof = fd
                .containing_oneof()
                .filter(|o| !o.is_synthetic())
                .and_then(|o| oneofs.iter().position(|n| n == o.full_name()))
                .map(|i| i as u16);
            // The root has one row per record, so its 64-bit scalars can
            // be stored by row index (a oneof member may be dropped again).
            let wide = depth == 0 && oneof.is_none();
            let mut plan = self.field(&fd, column, &path, depth, wide)?;
            if map_entry {
                plan.absent = Absent::Default;
            }
            plan.oneof = oneof;
            children.push(Child {
                field: Arc::clone(column),
                shape: plan.shape.clone(),
            });
            numbers.push(fd.number());
            // Encoders pack lists that are declared packed (proto3's default).
            fast_wires.push(match plan.card {
                Card::Repeated { packable: true, .. } if fd.is_packed() => WireType::Len,
                _ => plan.wire,
            });
            fields.push(plan);
        }
        if fields.len() >= usize::from(u16::MAX) {
            return Err(Error::incompatible_field(prefix, "more than 65534 fields"));
        }
        // Fields in number order, the order encoders write them in: a
        // field's index is also its position in the fast-tag table.
        let mut sorted: Vec<(u32, WireType, FieldPlan)> = numbers
            .into_iter()
            .zip(fast_wires)
            .zip(fields)
            .map(|((number, wire), field)| (number, wire, field))
            .collect();
        sorted.sort_by_key(|(number, ..)| *number);
        let numbers: Vec<u32> = sorted.iter().map(|(number, ..)| *number).collect();
        let (lookup, sparse) = lookup_tables(&numbers);
        let mut fields = Vec::with_capacity(sorted.len());
        let mut fast = Vec::with_capacity(sorted.len());
        for (position, (number, fast_wire, mut field)) in sorted.into_iter().enumerate() {
            // Lists and maps repeat their tag per element, unless packed.
            let repeats = match field.card {
                Card::Singular => false,
                Card::Map { .. } => true,
                Card::Repeated { packable, .. } => !(packable && fast_wire == WireType::Len),
            };
            field.next = (if repeats { position } else { position + 1 }) as u32;
            let mut tag = FastTag::new(number, fast_wire);
            (tag.kind, tag.col) = FastKind::of(&field);
            fast.push(tag);
            fields.push(field);
        }
        let node = &mut self.nodes[id as usize];
        node.lean = fast.iter().all(|f| {
            matches!(
                f.kind,
                FastKind::Generic | FastKind::WideF64 | FastKind::WideI64 | FastKind::Utf8
            )
        });
        node.fast = fast;
        node.n_singular = fields
            .iter()
            .filter(|f| matches!(f.card, Card::Singular))
            .count() as u32;
        node.close_always = fields
            .iter()
            .any(|f| !matches!(f.card, Card::Singular) || matches!(f.op, Op::Message(_)));
        node.n_oneofs = oneofs.len() as u16;
        node.lookup = lookup;
        node.sparse = sparse;
        node.fields = fields;
        node.children = children;
        Ok(id)
    }

    /// Plans one descriptor field stored in `column`; `wide`: a singular
    /// 64-bit scalar may go into a [`Shape::Wide`] column.
    fn field(
        &mut self,
        fd: &FieldDescriptor,
        column: &FieldRef,
        path: &str,
        depth: usize,
        wide: bool,
    ) -> Result<FieldPlan> {
        if fd.is_group() {
            return Err(Error::incompatible_field(path, "groups are not supported"));
        }
        let path_id = self.path(path);
        if fd.is_map() {
            let (DataType::Map(entries, _), Kind::Message(entry_msg)) =
                (column.data_type(), fd.kind())
            else {
                return Err(mismatch(path, "map", column.data_type()));
            };
            let DataType::Struct(entry_fields) = entries.data_type() else {
                return Err(mismatch(path, "map", column.data_type()));
            };
            if entry_fields.len() != 2 {
                return Err(mismatch(path, "map", column.data_type()));
            }
            // Entries bind by position: Arrow names them key/value, keys/values, ...
            let bindings = vec![
                Some(entry_msg.map_entry_key_field()),
                Some(entry_msg.map_entry_value_field()),
            ];
            let map = bump(&mut self.counts.maps);
            let entry = self.message(
                &entry_msg,
                entry_fields,
                bindings,
                path,
                None,
                true,
                depth + 1,
            )?;
            return Ok(FieldPlan {
                path: path_id,
                wire: WireType::Len,
                card: Card::Map { map, entry },
                op: Op::Message(entry),
                shape: Shape::Map { map, entry },
                absent: Absent::Default,
                oneof: None,
                next: 0,
            });
        }
        if fd.is_list() {
            let DataType::List(elem) = column.data_type() else {
                return Err(mismatch(
                    path,
                    &format!("repeated {}", kind_name(&fd.kind())),
                    column.data_type(),
                ));
            };
            let (elem_shape, op, wire) = self.value(&fd.kind(), elem, path, depth, false)?;
            let list = bump(&mut self.counts.lists);
            let packable = !matches!(wire, WireType::Len);
            return Ok(FieldPlan {
                path: path_id,
                wire,
                card: Card::Repeated { list, packable },
                op,
                shape: Shape::List {
                    list,
                    elem: Box::new(elem_shape),
                },
                absent: Absent::Default,
                oneof: None,
                next: 0,
            });
        }
        let (shape, op, wire) = self.value(&fd.kind(), column, path, depth, wide)?;
        let absent = if fd.is_required() {
            Absent::Required
        } else if !fd.supports_presence() {
            Absent::Default
        } else if column.is_nullable() {
            Absent::Null
        } else {
            Absent::NonNullable
        };
        Ok(FieldPlan {
            path: path_id,
            wire,
            card: Card::Singular,
            op,
            shape,
            absent,
            oneof: None,
            next: 0,
        })
    }

    /// Plans one value of protobuf type `kind` stored in `column`: the shape
    /// that holds it, the op that reads it, and its wire type.
    fn value(
        &mut self,
        kind: &Kind,
        column: &Field,
        path: &str,
        depth: usize,
        wide: bool,
    ) -> Result<(Shape, Op, WireType)> {
        let Kind::Message(message) = kind else {
            return self.scalar(kind, column, path, wide);
        };
        match well_known(message) {
            Some(WellKnown::Timestamp) => {
                let DataType::Timestamp(unit, _) = column.data_type() else {
                    return Err(mismatch(
                        path,
                        "google.protobuf.Timestamp",
                        column.data_type(),
                    ));
                };
                let col = bump(&mut self.counts.i64s);
                let slot = bump(&mut self.counts.timestamps);
                Ok((
                    Shape::I64(col),
                    Op::Timestamp {
                        col,
                        slot,
                        unit: *unit,
                    },
                    WireType::Len,
                ))
            }
            Some(WellKnown::Wrapper(inner)) => {
                let (shape, op, inner_wire) = self.scalar(&inner.kind(), column, path, false)?;
                Ok((
                    shape,
                    Op::Wrapper {
                        inner: Box::new(op),
                        wire: inner_wire,
                    },
                    WireType::Len,
                ))
            }
            None => {
                let DataType::Struct(fields) = column.data_type() else {
                    return Err(mismatch(path, message.full_name(), column.data_type()));
                };
                let bindings = bind_by_name(message, fields, path)?;
                let struct_col = Some(bump(&mut self.counts.structs));
                let node = self.message(
                    message,
                    fields,
                    bindings,
                    path,
                    struct_col,
                    false,
                    depth + 1,
                )?;
                Ok((Shape::Struct(node), Op::Message(node), WireType::Len))
            }
        }
    }

    /// Plans a scalar (non-message) value; see the type table in PROTOBUF.md.
    fn scalar(
        &mut self,
        kind: &Kind,
        column: &Field,
        path: &str,
        wide: bool,
    ) -> Result<(Shape, Op, WireType)> {
        use WireType::{I32 as W32, I64 as W64, Len, Varint};
        let c = &mut self.counts;
        let dt = column.data_type();
        let src32 = match kind {
            Kind::Int32 | Kind::Enum(_) => Some((Src32::Var, Src64::VarI32, Varint)),
            Kind::Sint32 => Some((Src32::Zig, Src64::ZigI32, Varint)),
            Kind::Sfixed32 => Some((Src32::SFixed, Src64::SFixed32, W32)),
            _ => None,
        };
        let planned = match (kind, dt) {
            (Kind::Enum(e), DataType::Utf8) => {
                self.enums.push(EnumNames::new(e));
                let names = (self.enums.len() - 1) as u32;
                let col = bump(&mut self.counts.bytes);
                Some((Shape::Bytes(col), Op::EnumName { col, names }, Varint))
            }
            (_, DataType::Int32 | DataType::Date32 | DataType::Int16 | DataType::Int8)
                if src32.is_some() =>
            {
                let (src, _, wire) = src32.unwrap_or((Src32::Var, Src64::VarI32, Varint));
                let (lo, hi) = match dt {
                    DataType::Int16 => (i32::from(i16::MIN), i32::from(i16::MAX)),
                    DataType::Int8 => (i32::from(i8::MIN), i32::from(i8::MAX)),
                    _ => (i32::MIN, i32::MAX),
                };
                let col = bump(&mut c.i32s);
                Some((Shape::I32(col), Op::I32 { col, src, lo, hi }, wire))
            }
            (_, DataType::Int64) if src32.is_some() => {
                let (_, src, wire) = src32.unwrap_or((Src32::Var, Src64::VarI32, Varint));
                Some(int64(c, src, wire, wide))
            }
            (
                Kind::Int64 | Kind::Sint64 | Kind::Sfixed64,
                DataType::Int64 | DataType::Timestamp(_, _),
            )
            | (Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64, DataType::Int64) => {
                let (src, wire) = match kind {
                    Kind::Int64 => (Src64::VarI64, Varint),
                    Kind::Sint64 => (Src64::ZigI64, Varint),
                    Kind::Sfixed64 => (Src64::SFixed64, W64),
                    Kind::Uint32 => (Src64::VarU32, Varint),
                    Kind::Fixed32 => (Src64::Fixed32, W32),
                    Kind::Uint64 => (Src64::VarU64, Varint),
                    _ => (Src64::Fixed64, W64),
                };
                Some(int64(c, src, wire, wide))
            }
            (Kind::Uint32 | Kind::Fixed32, DataType::UInt32) => {
                let fixed = matches!(kind, Kind::Fixed32);
                let col = bump(&mut c.u32s);
                Some((
                    Shape::U32(col),
                    Op::U32 { col, fixed },
                    if fixed { W32 } else { Varint },
                ))
            }
            (Kind::Uint64 | Kind::Fixed64, DataType::UInt64) => {
                let fixed = matches!(kind, Kind::Fixed64);
                let col = bump(&mut c.u64s);
                Some((
                    Shape::U64(col),
                    Op::U64 { col, fixed },
                    if fixed { W64 } else { Varint },
                ))
            }
            (Kind::Float, DataType::Float32) => {
                let col = bump(&mut c.f32s);
                Some((Shape::F32(col), Op::F32 { col }, W32))
            }
            (Kind::Float, DataType::Float64) => {
                let col = bump(&mut c.f64s);
                Some((Shape::F64(col), Op::F64FromF32 { col }, W32))
            }
            (Kind::Double, DataType::Float64) if wide => {
                let slot = bump(&mut c.wide);
                Some((Shape::Wide(slot), Op::WideF64 { slot }, W64))
            }
            (Kind::Double, DataType::Float64) => {
                let col = bump(&mut c.f64s);
                Some((Shape::F64(col), Op::F64 { col }, W64))
            }
            (Kind::Bool, DataType::Boolean) => {
                let col = bump(&mut c.bools);
                Some((Shape::Bool(col), Op::Bool { col }, Varint))
            }
            (Kind::String, DataType::Utf8) => {
                let col = bump(&mut c.bytes);
                Some((Shape::Bytes(col), Op::Utf8 { col }, Len))
            }
            (Kind::Bytes, DataType::Binary) => {
                let col = bump(&mut c.bytes);
                Some((Shape::Bytes(col), Op::Binary { col }, Len))
            }
            _ => None,
        };
        planned.ok_or_else(|| mismatch(path, &kind_name(kind), dt))
    }
}

/// Plans a value bound for an `Int64` or `Timestamp` column.
fn int64(c: &mut Counts, src: Src64, wire: WireType, wide: bool) -> (Shape, Op, WireType) {
    if wide {
        let slot = bump(&mut c.wide);
        (Shape::Wide(slot), Op::WideI64 { slot, src }, wire)
    } else {
        let col = bump(&mut c.i64s);
        (Shape::I64(col), Op::I64 { col, src }, wire)
    }
}

/// Binds each table column to the descriptor field of the same name (exact,
/// else the one field equal ignoring ASCII case), and fails on descriptor
/// fields without a column.
fn bind_by_name(
    message: &MessageDescriptor,
    table: &Fields,
    prefix: &str,
) -> Result<Vec<Option<FieldDescriptor>>> {
    let mut used = vec![false; message.fields().len()];
    let all: Vec<FieldDescriptor> = message.fields().collect();
    let mut bindings = Vec::with_capacity(table.len());
    for column in table {
        let name = column.name();
        let found = all.iter().position(|f| f.name() == name).or_else(|| {
            let mut ci = all
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name().eq_ignore_ascii_case(name));
            match (ci.next(), ci.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        });
        if let Some(i) = found {
            if used[i] {
                return Err(Error::incompatible_field(
                    format!("{prefix}.{}", all[i].name()),
                    "bound to two table columns that differ only in case",
                ));
            }
            used[i] = true;
        }
        bindings.push(found.map(|i| all[i].clone()));
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(Error::incompatible_field(
            format!("{prefix}.{}", all[i].name()),
            NO_SUCH_COLUMN,
        ));
    }
    Ok(bindings)
}

/// Builds the dense and sparse field-number lookup tables.
fn lookup_tables(numbers: &[u32]) -> (Vec<u16>, Vec<(u32, u16)>) {
    let dense_len = numbers
        .iter()
        .copied()
        .filter(|n| *n < DENSE_LIMIT)
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut lookup = vec![0u16; dense_len];
    let mut sparse = Vec::new();
    for (i, &n) in numbers.iter().enumerate() {
        if n < DENSE_LIMIT {
            lookup[n as usize] = i as u16 + 1;
        } else {
            sparse.push((n, i as u16));
        }
    }
    sparse.sort_unstable();
    (lookup, sparse)
}

/// Why a descriptor field has no column.
pub const NO_SUCH_COLUMN: &str = "the table has no column of this name";

/// Why a non-nullable column has no descriptor field.
pub const NO_SUCH_FIELD: &str = "column is not nullable but the descriptor has no such field";

fn bump(counter: &mut u32) -> u32 {
    *counter += 1;
    *counter - 1
}

fn mismatch(path: &str, proto: &str, dt: &DataType) -> Error {
    Error::incompatible_field(
        path,
        format!("protobuf {proto} cannot be stored in a column of type {dt}"),
    )
}

/// The protobuf spelling of a field type, for error messages.
fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => m.full_name().into(),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
    }
}

/// Time units as a multiplier per second and a divisor per nanosecond.
pub(crate) fn unit_scale(unit: TimeUnit) -> (i64, i64) {
    match unit {
        TimeUnit::Second => (1, 1_000_000_000),
        TimeUnit::Millisecond => (1_000, 1_000_000),
        TimeUnit::Microsecond => (1_000_000, 1_000),
        TimeUnit::Nanosecond => (1_000_000_000, 1),
    }
}
