//! `datafusion-proto` extension codecs: jammi's plans to bytes and back, for engines that
//! ship plans between processes (Ballista, a scheduler of one's own).
//!
//! - [`JammiLogicalCodec`], for the `vector_search` node and the indexed tables (result tables
//!   and tables created with `jammi.vector_column`).
//! - [`JammiPhysicalCodec`], for the executable search, [`VectorSearchExec`], and the merge
//!   of a segmented table's per-segment searches, [`SegmentMergeExec`], and the live rows
//!   of a scan of segments with deletions, [`LiveRowsExec`].
//!
//! A table travels as its Parquet URL and its manifest; a search as its table, `k`, options
//! and expressions. Credentials never travel: the decoding process reaches the storage with
//! its own (ambient credentials, or stores bound in its registry).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, DataFusionError, Result, TableReference};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::logical_plan::from_proto::parse_expr;
use datafusion_proto::logical_plan::to_proto::serialize_expr;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::catalog::IndexedTable;
use crate::catalog::live::{LiveRowsExec, Selections};
use crate::sql::vector_search::SearchContext;
use crate::sql::vector_search::args::SearchOptions;
use crate::sql::vector_search::exec::{Prefilter, Queries, VectorSearchExec};
use crate::sql::vector_search::merge::{MergeColumns, SegmentMergeExec};
use crate::sql::vector_search::node::{BatchQueries, VectorSearchNode};
use crate::sql::vector_search::resolve::{
    Deleted, DistanceColumn, SearchSpec, SearchTarget, Segment,
};
use crate::storage::StorageUrl;
use crate::store::Manifest;
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};

/// What is searched: the file, its manifest, the schema, `k`, the options and the columns.
#[derive(Clone, PartialEq, Message)]
struct SpecProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    parquet: String,
    #[prost(string, optional, tag = "3")]
    manifest: Option<String>,
    #[prost(message, optional, tag = "4")]
    schema: Option<protobuf::Schema>,
    #[prost(uint64, tag = "5")]
    k: u64,
    #[prost(string, tag = "6")]
    options: String,
    #[prost(uint64, repeated, tag = "7")]
    columns: Vec<u64>,
    /// The distance column holds the metric's SQL function's value.
    #[prost(bool, tag = "8")]
    function_distance: bool,
    /// Segments of a result table that changed: their Parquet files and manifests (JSON).
    #[prost(string, repeated, tag = "9")]
    segment_parquets: Vec<String>,
    #[prost(string, repeated, tag = "10")]
    segment_manifests: Vec<String>,
    /// Each segment's deletion file: its URL and record (JSON), or empty.
    #[prost(string, repeated, tag = "11")]
    segment_deletions: Vec<String>,
}

/// A `VectorSearchNode`.
#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(message, optional, tag = "1")]
    spec: Option<SpecProto>,
    #[prost(message, optional, tag = "2")]
    query: Option<protobuf::LogicalExprNode>,
    #[prost(message, optional, tag = "3")]
    prefilter: Option<protobuf::LogicalExprNode>,
    #[prost(uint64, repeated, tag = "4")]
    batch: Vec<u64>,
    // Tag 5 held `scan_only`, a form the ORDER BY rule no longer plans.
    #[prost(uint64, repeated, tag = "6")]
    projection: Vec<u64>,
    #[prost(bool, tag = "7")]
    projected: bool,
    #[prost(message, optional, tag = "8")]
    schema: Option<protobuf::DfSchema>,
}

/// An indexed table.
#[derive(Clone, PartialEq, Message)]
struct TableProto {
    #[prost(string, tag = "1")]
    parquet: String,
    #[prost(string, tag = "2")]
    manifest: String,
    /// A result table that changed: the root and the version record (JSON) it was read at.
    #[prost(string, tag = "3")]
    root: String,
    #[prost(string, tag = "4")]
    version: String,
}

/// A `VectorSearchExec`.
#[derive(Clone, PartialEq, Message)]
struct ExecProto {
    #[prost(message, optional, tag = "1")]
    spec: Option<SpecProto>,
    #[prost(message, optional, tag = "2")]
    query: Option<protobuf::PhysicalExprNode>,
    #[prost(message, optional, tag = "3")]
    prefilter: Option<protobuf::PhysicalExprNode>,
    #[prost(uint64, repeated, tag = "4")]
    prefilter_columns: Vec<u64>,
    #[prost(string, tag = "5")]
    prefilter_text: String,
    #[prost(uint64, repeated, tag = "6")]
    batch: Vec<u64>,
    // Tag 7 held `scan_only`, a form the ORDER BY rule no longer plans.
    #[prost(uint64, repeated, tag = "8")]
    projection: Vec<u64>,
    #[prost(bool, tag = "9")]
    projected: bool,
    /// The parameter of a prepared query's search, unbound.
    #[prost(string, optional, tag = "10")]
    param: Option<String>,
    /// Its last input is the segment numbers its partitions search.
    #[prost(bool, tag = "11")]
    segmented: bool,
}

/// A `SegmentMergeExec`: the merge of a segmented table's per-segment searches.
#[derive(Clone, PartialEq, Message)]
struct MergeProto {
    #[prost(uint64, tag = "1")]
    k: u64,
    #[prost(uint64, tag = "2")]
    distance: u64,
    #[prost(bool, tag = "3")]
    descending: bool,
    #[prost(uint64, optional, tag = "4")]
    query_key: Option<u64>,
    #[prost(uint64, optional, tag = "5")]
    rank: Option<u64>,
    #[prost(uint64, repeated, tag = "6")]
    projection: Vec<u64>,
    #[prost(bool, tag = "7")]
    projected: bool,
    #[prost(uint64, optional, tag = "8")]
    part: Option<u64>,
}

/// A `LiveRowsExec`: the live rows of each segment file with deletions.
#[derive(Clone, PartialEq, Message)]
struct LiveRowsProto {
    #[prost(message, repeated, tag = "1")]
    files: Vec<FileRowsProto>,
}

/// One file's row selection: runs of rows, each `count << 1 | skip`.
#[derive(Clone, PartialEq, Message)]
struct FileRowsProto {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(uint64, repeated, tag = "2")]
    runs: Vec<u64>,
}

/// Which of jammi's plans a physical payload holds.
#[derive(Clone, PartialEq, Message)]
struct PhysicalProto {
    #[prost(oneof = "PhysicalNode", tags = "1, 2, 3")]
    node: Option<PhysicalNode>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum PhysicalNode {
    #[prost(message, tag = "1")]
    Search(Box<ExecProto>),
    #[prost(message, tag = "2")]
    Merge(MergeProto),
    #[prost(message, tag = "3")]
    LiveRows(LiveRowsProto),
}

fn encode_live_rows(selections: &Selections) -> LiveRowsProto {
    let mut files: Vec<FileRowsProto> = selections
        .iter()
        .map(|(path, sel)| FileRowsProto {
            path: path.to_string(),
            runs: sel
                .iter()
                .map(|r| ((r.row_count as u64) << 1) | u64::from(r.skip))
                .collect(),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    LiveRowsProto { files }
}

fn decode_live_rows(p: &LiveRowsProto) -> Selections {
    p.files
        .iter()
        .map(|f| {
            let runs: Vec<RowSelector> = f
                .runs
                .iter()
                .map(|&r| {
                    let n = (r >> 1) as usize;
                    if r & 1 == 1 {
                        RowSelector::skip(n)
                    } else {
                        RowSelector::select(n)
                    }
                })
                .collect();
            (
                object_store::path::Path::from(f.path.as_str()),
                RowSelection::from(runs),
            )
        })
        .collect()
}

fn bad(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("jammi codec: {what}: {e}"))
}

fn decode<M: Message + Default>(buf: &[u8], what: &str) -> Result<M> {
    M::decode(buf).map_err(|e| bad(what, e))
}

fn usizes(v: &[u64]) -> Vec<usize> {
    v.iter().map(|&i| i as usize).collect()
}

fn u64s(v: &[usize]) -> Vec<u64> {
    v.iter().map(|&i| i as u64).collect()
}

fn encode_spec(spec: &SearchSpec) -> Result<SpecProto> {
    let t = &spec.target;
    Ok(SpecProto {
        name: t.name.clone(),
        parquet: t.parquet.to_string(),
        manifest: t
            .manifest
            .as_ref()
            .map(|m| String::from_utf8_lossy(&m.to_json()).into_owned()),
        schema: Some(t.schema.as_ref().try_into()?),
        k: spec.k as u64,
        options: spec.options.to_option_string(),
        columns: u64s(&spec.columns),
        function_distance: spec.distance == DistanceColumn::Function,
        segment_parquets: t.segments.iter().map(|s| s.parquet.to_string()).collect(),
        segment_manifests: t
            .segments
            .iter()
            .map(|s| String::from_utf8_lossy(&s.manifest.to_json()).into_owned())
            .collect(),
        segment_deletions: t
            .segments
            .iter()
            .map(|s| match &s.deleted {
                Some(d) => serde_json::to_string(&(d.url.to_string(), &d.record))
                    .map_err(|e| bad("encode", e)),
                None => Ok(String::new()),
            })
            .collect::<Result<_>>()?,
    })
}

fn decode_spec(p: Option<&SpecProto>) -> Result<SearchSpec> {
    let p = p.ok_or_else(|| bad("search", "no spec"))?;
    let parquet = StorageUrl::parse(&p.parquet)?;
    let manifest = match &p.manifest {
        Some(json) => Some(Manifest::from_json(&p.name, json.as_bytes())?),
        None => None,
    };
    let schema: Schema = p
        .schema
        .as_ref()
        .ok_or_else(|| bad("search", "no schema"))?
        .try_into()?;
    let segments = p
        .segment_parquets
        .iter()
        .zip(&p.segment_manifests)
        .enumerate()
        .map(|(i, (url, json))| {
            let parquet = StorageUrl::parse(url)?;
            let manifest = Manifest::from_json(&parquet.file_name(), json.as_bytes())?;
            let deleted = match p.segment_deletions.get(i).map(String::as_str) {
                None | Some("") => None,
                Some(d) => {
                    let (url, record): (String, _) =
                        serde_json::from_str(d).map_err(|e| bad("decode", e))?;
                    Some(Deleted {
                        url: StorageUrl::parse(&url)?,
                        record,
                    })
                }
            };
            Ok(Segment {
                parquet,
                manifest,
                deleted,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let target = SearchTarget {
        name: p.name.clone(),
        dir: parquet.parent(),
        parquet,
        manifest,
        schema: Arc::new(schema),
        segments,
        deleted: None,
    };
    let mut spec = SearchSpec::new(
        Arc::new(target),
        p.k as usize,
        SearchOptions::parse(&p.options)?,
    )?;
    spec.columns = usizes(&p.columns);
    if p.function_distance {
        spec.distance = DistanceColumn::Function;
    }
    Ok(spec)
}

/// Logical codec for jammi's node and tables.
#[derive(Debug, Default)]
pub struct JammiLogicalCodec;

impl LogicalExtensionCodec for JammiLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        let p: NodeProto = decode(buf, "vector_search node")?;
        let spec = decode_spec(p.spec.as_ref())?;
        let expr = |e: &Option<protobuf::LogicalExprNode>| -> Result<_> {
            e.as_ref()
                .map(|e| parse_expr(e, ctx, self))
                .transpose()
                .map_err(|e| bad("expression", e))
        };
        let batch = match (p.batch.as_slice(), inputs) {
            ([key, vector], [input]) => Some(BatchQueries {
                input: input.clone(),
                key: *key as usize,
                vector: *vector as usize,
            }),
            _ => None,
        };
        let schema: DFSchema = p
            .schema
            .as_ref()
            .ok_or_else(|| bad("vector_search node", "no schema"))?
            .try_into()?;
        let node = VectorSearchNode::try_new(
            spec,
            expr(&p.query)?,
            batch,
            expr(&p.prefilter)?,
            p.projected.then(|| usizes(&p.projection)),
            None,
        )?
        .with_schema(Arc::new(schema));
        Ok(Extension {
            node: Arc::new(node),
        })
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        let Some(n) = node.node.as_any().downcast_ref::<VectorSearchNode>() else {
            return Err(bad("encode", format!("unknown node {}", node.node.name())));
        };
        let expr = |e: &Option<datafusion::prelude::Expr>| -> Result<_> {
            e.as_ref()
                .map(|e| serialize_expr(e, self))
                .transpose()
                .map_err(|e| bad("expression", e))
        };
        let p = NodeProto {
            spec: Some(encode_spec(&n.spec)?),
            query: expr(&n.query)?,
            prefilter: expr(&n.prefilter)?,
            batch: n
                .batch
                .as_ref()
                .map_or(vec![], |b| vec![b.key as u64, b.vector as u64]),
            projection: n.projection.as_deref().map_or(vec![], u64s),
            projected: n.projection.is_some(),
            schema: Some(n.schema_ref().try_into()?),
        };
        p.encode(buf).map_err(|e| bad("encode", e))
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        _schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let p: TableProto = decode(buf, "table")?;
        if !p.version.is_empty() {
            let root = StorageUrl::parse(&p.root)?;
            let version = serde_json::from_str(&p.version).map_err(|e| bad("decode", e))?;
            return Ok(Arc::new(IndexedTable::segmented(&root, version, None)?));
        }
        let parquet = StorageUrl::parse(&p.parquet)?;
        let manifest = Manifest::from_json(&parquet.file_name(), p.manifest.as_bytes())?;
        Ok(Arc::new(IndexedTable::new(parquet, manifest, None)?))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let any: &dyn std::any::Any = node.as_ref();
        let Some(t) = any.downcast_ref::<IndexedTable>() else {
            return Err(bad(
                "encode",
                format!("table {table_ref} is not a jammi table"),
            ));
        };
        let (root, version) = match &t.versioned {
            Some((root, v)) => (
                root.to_string(),
                serde_json::to_string(v).map_err(|e| bad("encode", e))?,
            ),
            None => (String::new(), String::new()),
        };
        let p = TableProto {
            parquet: t.parquet.to_string(),
            manifest: String::from_utf8_lossy(&t.manifest.to_json()).into_owned(),
            root,
            version,
        };
        p.encode(buf).map_err(|e| bad("encode", e))
    }
}

/// Physical codec for [`VectorSearchExec`]; decoded nodes search through `ctx` (its stores
/// and caches).
#[derive(Debug)]
pub struct JammiPhysicalCodec {
    ctx: Arc<SearchContext>,
}

impl JammiPhysicalCodec {
    /// A codec whose decoded searches use `ctx` (what [`crate::register`] returns).
    pub fn new(ctx: Arc<SearchContext>) -> Self {
        JammiPhysicalCodec { ctx }
    }
}

impl PhysicalExtensionCodec for JammiPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let p: PhysicalProto = decode(buf, "jammi plan")?;
        match p.node {
            Some(PhysicalNode::Search(p)) => self.decode_search(*p, inputs, ctx, proto_converter),
            Some(PhysicalNode::Merge(m)) => {
                let [input] = inputs else {
                    return Err(bad("SegmentMergeExec", "it has one input"));
                };
                let columns = MergeColumns {
                    distance: m.distance as usize,
                    descending: m.descending,
                    query_key: m.query_key.map(|i| i as usize),
                    rank: m.rank.map(|i| i as usize),
                    part: m.part.map(|i| i as usize),
                };
                let projection = m.projected.then(|| usizes(&m.projection));
                Ok(Arc::new(SegmentMergeExec::try_new(
                    input.clone(),
                    m.k as usize,
                    columns,
                    projection,
                )?))
            }
            Some(PhysicalNode::LiveRows(l)) => {
                let [input] = inputs else {
                    return Err(bad("LiveRowsExec", "it has one input"));
                };
                let selections = Arc::new(decode_live_rows(&l));
                Ok(Arc::new(LiveRowsExec::try_new(input.clone(), selections)?))
            }
            None => Err(bad("decode", "no plan")),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let node = if let Some(m) = node.downcast_ref::<SegmentMergeExec>() {
            let c = m.columns();
            PhysicalNode::Merge(MergeProto {
                k: m.k() as u64,
                distance: c.distance as u64,
                descending: c.descending,
                query_key: c.query_key.map(|i| i as u64),
                rank: c.rank.map(|i| i as u64),
                part: c.part.map(|i| i as u64),
                projection: m.projection().map_or(vec![], u64s),
                projected: m.projection().is_some(),
            })
        } else if let Some(l) = node.downcast_ref::<LiveRowsExec>() {
            PhysicalNode::LiveRows(encode_live_rows(l.selections()))
        } else if let Some(e) = node.downcast_ref::<VectorSearchExec>() {
            PhysicalNode::Search(Box::new(self.encode_search(e, proto_converter)?))
        } else {
            return Err(bad("encode", format!("unknown plan {}", node.name())));
        };
        let p = PhysicalProto { node: Some(node) };
        p.encode(buf).map_err(|e| bad("encode", e))
    }
}

impl JammiPhysicalCodec {
    fn decode_search(
        &self,
        p: ExecProto,
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let spec = decode_spec(p.spec.as_ref())?;
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        // A segmented table's segment numbers come last (perhaps restricted to the
        // partitions of one task).
        let (inputs, segments) = match (p.segmented, inputs.split_last()) {
            (true, Some((last, rest))) => (rest, Some(last.clone())),
            (true, None) => return Err(bad("VectorSearchExec", "no segment numbers")),
            (false, _) => (inputs, None),
        };
        let queries =
            match (&p.query, &p.param, p.batch.as_slice(), inputs) {
                (None, Some(id), [], []) => Queries::Param(id.clone()),
                (Some(q), None, [], []) => Queries::Single(
                    proto_converter.proto_to_physical_expr(q, &Schema::empty(), &decode_ctx)?,
                ),
                (None, None, [key, vector], [input]) => Queries::Batch {
                    input: input.clone(),
                    key: *key as usize,
                    vector: *vector as usize,
                },
                _ => return Err(bad("VectorSearchExec", "no query and no query relation")),
            };
        let prefilter = match &p.prefilter {
            Some(e) => {
                let columns = usizes(&p.prefilter_columns);
                let schema = spec.target.schema.project(&columns)?;
                Some(Prefilter {
                    expr: proto_converter.proto_to_physical_expr(e, &schema, &decode_ctx)?,
                    columns,
                    text: p.prefilter_text.clone(),
                })
            }
            None => None,
        };
        let search = VectorSearchExec::try_new(
            spec,
            queries,
            prefilter,
            p.projected.then(|| usizes(&p.projection)),
            self.ctx.clone(),
        )?;
        Ok(Arc::new(match segments {
            Some(s) => search.with_segments(s)?,
            None => search,
        }))
    }

    fn encode_search(
        &self,
        e: &VectorSearchExec,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<ExecProto> {
        let (query, batch, param) = match e.queries() {
            Queries::Single(q) => (
                Some(proto_converter.physical_expr_to_proto(q, self)?),
                vec![],
                None,
            ),
            Queries::Batch { key, vector, .. } => (None, vec![*key as u64, *vector as u64], None),
            Queries::Param(id) => (None, vec![], Some(id.clone())),
        };
        let p = ExecProto {
            spec: Some(encode_spec(e.spec())?),
            query,
            prefilter: e
                .prefilter()
                .map(|f| proto_converter.physical_expr_to_proto(&f.expr, self))
                .transpose()?,
            prefilter_columns: e.prefilter().map_or(vec![], |f| u64s(&f.columns)),
            prefilter_text: e.prefilter().map_or(String::new(), |f| f.text.clone()),
            batch,
            projection: e.projection().map_or(vec![], u64s),
            projected: e.projection().is_some(),
            param,
            segmented: e.segments().is_some(),
        };
        Ok(p)
    }
}
