//! Data pipeline: synthetic arithmetic, the character tokenizer, and JSONL / Parquet field mapping.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rlvr_trainer::data::{
    arithmetic_tokenizer, write_arithmetic_tokenizer, ArithmeticSpec, DataError, DataSpec, Dataset, FileFormat,
    FileSpec, Problem, RowRef, ARITHMETIC_CHARS, ARITHMETIC_VOCAB, UNK_ID,
};
use rlvr_verifiers::{CodeTests, MathVerifier, Outcome, StdioCase, Verifier};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data").join(name)
}

fn arithmetic(min_digits: u32, max_digits: u32, operands: u32, ops: &[&str], held_out: usize) -> DataSpec {
    let ops = ops.iter().map(|s| s.to_string()).collect();
    DataSpec::Arithmetic(ArithmeticSpec { min_digits, max_digits, operands, ops, held_out })
}

fn jsonl(name: &str, format: Option<FileFormat>) -> FileSpec {
    FileSpec { format, ..FileSpec::new(fixture(name)) }
}

/// Independent evaluator: split the prompt into `+`/`-` separated terms, each a product.
fn evaluate(prompt: &str) -> i128 {
    let expr = prompt.strip_suffix('=').expect("prompt ends in =");
    let mut total = 0i128;
    let mut start = 0;
    let mut sign = 1i128;
    let bytes = expr.as_bytes();
    for i in 0..=bytes.len() {
        if i == bytes.len() || bytes[i] == b'+' || bytes[i] == b'-' {
            let term: i128 = expr[start..i].split('*').map(|f| f.parse::<i128>().unwrap()).product();
            total += sign * term;
            if i < bytes.len() {
                sign = if bytes[i] == b'+' { 1 } else { -1 };
            }
            start = i + 1;
        }
    }
    total
}

/// Operands and operators of a prompt such as `12*3-4=`.
fn parse(prompt: &str) -> (Vec<&str>, Vec<char>) {
    let expr = prompt.strip_suffix('=').unwrap();
    let operands = expr.split(['+', '-', '*']).collect();
    let ops = expr.chars().filter(|c| "+-*".contains(*c)).collect();
    (operands, ops)
}

#[test]
fn arithmetic_is_deterministic_in_the_seed() -> Result<()> {
    let spec = arithmetic(1, 3, 3, &["+", "-", "*"], 50);
    let (a, b, c) = (Dataset::load(&spec, 7)?, Dataset::load(&spec, 7)?, Dataset::load(&spec, 8)?);
    assert_eq!(a.train_len(), None);
    assert_eq!(a.held_out(), b.held_out());
    let mut differ = 0;
    for i in 0..300 {
        assert_eq!(a.train(i), b.train(i));
        differ += usize::from(a.train(i).prompt != c.train(i).prompt);
    }
    assert!(differ > 280, "seeds 7 and 8 agree on {} of 300 problems", 300 - differ);
    assert_ne!(a.held_out(), c.held_out());
    assert_eq!(a.train(3).id, "arithmetic/train/3");
    Ok(())
}

#[test]
fn arithmetic_respects_the_difficulty_knobs() -> Result<()> {
    for (min, max, n, ops) in [(1, 1, 2, vec!["+"]), (3, 5, 4, vec!["*", "-"]), (2, 6, 3, vec!["+", "-", "*"])] {
        let data = Dataset::load(&arithmetic(min, max, n, &ops, 20), 1)?;
        let (mut widths, mut seen_ops) = (HashSet::new(), HashSet::new());
        for i in 0..2000 {
            let p = data.train(i);
            let (operands, used) = parse(&p.prompt);
            assert_eq!(operands.len(), n as usize, "{}", p.prompt);
            for operand in operands {
                let width = operand.len() as u32;
                assert!((min..=max).contains(&width), "{operand} in {}", p.prompt);
                assert!(width == 1 || !operand.starts_with('0'), "leading zero in {}", p.prompt);
                widths.insert(width);
            }
            for op in used {
                assert!(ops.contains(&op.to_string().as_str()), "{op} in {}", p.prompt);
                seen_ops.insert(op);
            }
        }
        assert_eq!(widths.len() as u32, max - min + 1, "every width appears");
        assert_eq!(seen_ops.len(), ops.len(), "every operator appears");
    }
    Ok(())
}

#[test]
fn arithmetic_answers_are_exact_and_verified() -> Result<()> {
    let verifier = MathVerifier::default();
    let mut negatives = 0;
    for spec in [arithmetic(1, 2, 2, &["+", "-"], 10), arithmetic(1, 4, 4, &["+", "-", "*"], 10)] {
        let data = Dataset::load(&spec, 3)?;
        let problems: Vec<Problem> = (0..400).map(|i| data.train(i)).chain(data.held_out().iter().cloned()).collect();
        for p in problems {
            let expected = evaluate(&p.prompt);
            assert_eq!(p.task.answer.as_deref(), Some(expected.to_string().as_str()), "{}", p.prompt);
            assert_eq!(p.reference.as_deref(), Some(expected.to_string().as_str()));
            assert_eq!(p.task.prompt.as_deref(), Some(p.prompt.as_str()));
            negatives += usize::from(expected < 0);
            let right = verifier.verify(&p.task, p.reference.as_deref().unwrap())?;
            assert_eq!(right.outcome, Outcome::Correct, "{} {:?}", p.prompt, right.detail);
            let wrong = verifier.verify(&p.task, &(expected + 1).to_string())?;
            assert_eq!(wrong.outcome, Outcome::Incorrect, "{} {:?}", p.prompt, wrong.detail);
        }
    }
    assert!(negatives > 50, "negative results occur ({negatives})");
    assert_eq!(evaluate("2+3*4-5="), 9);
    let data = Dataset::load(&arithmetic(1, 1, 3, &["*", "+"], 0), 0)?;
    let p = (0..).map(|i| data.train(i)).find(|p| p.prompt.contains('+') && p.prompt.contains('*')).unwrap();
    assert_eq!(p.reference.unwrap().parse::<i128>()?, evaluate(&p.prompt), "precedence in {}", p.prompt);
    Ok(())
}

#[test]
fn held_out_never_appears_in_training() -> Result<()> {
    // 1-2 digits, two operands, + and -: 20,000 prompts, so 200 held out would show up ~1,000
    // times in 100k unfiltered draws.
    let data = Dataset::load(&serde_json::from_str(r#"{"source": "arithmetic"}"#)?, 11)?;
    let held: HashSet<&str> = data.held_out().iter().map(|p| p.prompt.as_str()).collect();
    assert_eq!(data.held_out().len(), 200);
    assert_eq!(held.len(), 200, "held-out prompts are distinct");
    for i in 0..100_000 {
        let p = data.train(i);
        assert!(!held.contains(p.prompt.as_str()), "train {i} is held out: {}", p.prompt);
    }
    Ok(())
}

#[test]
fn arithmetic_spec_errors_name_the_setting() {
    let cases = [
        (arithmetic(1, 1, 2, &["+"], 200), "held_out"),
        (arithmetic(1, 1, 2, &["+"], 95), "held_out"),
        (arithmetic(1, 2, 1, &["+"], 0), "operands"),
        (arithmetic(1, 2, 2, &["/"], 0), "ops"),
        (arithmetic(1, 2, 2, &[], 0), "ops"),
        (arithmetic(3, 2, 2, &["+"], 0), "min_digits"),
        (arithmetic(1, 18, 4, &["*"], 0), "max_digits"),
    ];
    for (spec, field) in cases {
        match Dataset::load(&spec, 0) {
            Err(DataError::Spec { field: f, message }) => assert_eq!(f, field, "{message}"),
            other => panic!("{spec:?}: expected a spec error on {field}, got {other:?}"),
        }
    }
    assert!(Dataset::load(&arithmetic(1, 1, 2, &["+"], 50), 0).is_ok(), "half of 100 prompts may be held out");
}

#[test]
fn data_spec_reads_the_recipe_table() -> Result<()> {
    let spec: DataSpec = serde_json::from_str(r#"{"source": "arithmetic", "max_digits": 3}"#)?;
    assert_eq!(spec, DataSpec::Arithmetic(ArithmeticSpec { max_digits: 3, ..ArithmeticSpec::default() }));
    let spec: DataSpec = serde_json::from_str(r#"{"source": "parquet", "train": "a.parquet", "format": "gsm8k"}"#)?;
    let expected = FileSpec { format: Some(FileFormat::Gsm8k), ..FileSpec::new("a.parquet") };
    assert_eq!(spec, DataSpec::Parquet(expected));
    for bad in [r#"{"source": "arithmetic", "digits": 3}"#, r#"{"source": "jsonl", "train": "a", "fmt": "math"}"#] {
        assert!(serde_json::from_str::<DataSpec>(bad).is_err(), "{bad} is rejected");
    }
    Ok(())
}

#[test]
fn tokenizer_ids_and_round_trip() -> Result<()> {
    let tok = arithmetic_tokenizer();
    for (token, id) in [("<bos>", 0), ("<eos>", 1), ("<pad>", 2), ("0", 3), ("9", 12), ("+", 13), ("\n", UNK_ID - 1)] {
        assert_eq!(tok.token_to_id(token), Some(id), "{token:?}");
    }
    assert_eq!(tok.token_to_id("<unk>"), Some(UNK_ID));
    assert_eq!(tok.get_vocab_size(true), ARITHMETIC_VOCAB);
    let text = "12+34=46";
    let ids = tok.encode(text, false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    let expected: Vec<u32> = text.chars().map(|c| 3 + ARITHMETIC_CHARS.find(c).unwrap() as u32).collect();
    assert_eq!(ids, expected);
    assert_eq!(tok.decode(&ids, true).map_err(anyhow::Error::msg)?, text);
    let with_bos = tok.encode(text, true).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    assert_eq!(with_bos[0], 0);
    assert_eq!(&with_bos[1..], &ids[..]);
    let all = tok.encode(ARITHMETIC_CHARS, false).map_err(anyhow::Error::msg)?;
    assert_eq!(all.get_ids().len(), ARITHMETIC_CHARS.len(), "one token per character, space and newline too");
    assert_eq!(tok.decode(all.get_ids(), false).map_err(anyhow::Error::msg)?, ARITHMETIC_CHARS);
    let unknown = tok.encode("1x", false).map_err(anyhow::Error::msg)?;
    assert_eq!(unknown.get_ids(), &[4, UNK_ID]);
    Ok(())
}

#[test]
fn rollout_loader_reads_the_written_tokenizer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_arithmetic_tokenizer(dir.path())?;
    let tok = rlvr_rollout::tokenizer::Tokenizer::from_dir(dir.path())?;
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
    assert_eq!(tok.vocab_size(), ARITHMETIC_VOCAB);
    let ids = tok.encode("12+34=46", true)?;
    assert_eq!(ids, [0, 4, 5, 13, 6, 7, 17, 7, 9]);
    assert_eq!(tok.decode(&ids, true)?, "12+34=46");
    assert_eq!(tok.decode(&ids, false)?, "<bos>12+34=46");
    // `rlvr generate` loads tokenizer.json with the tokenizers crate and encodes with specials.
    let raw = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).map_err(anyhow::Error::msg)?;
    let raw_ids = raw.encode("12+34=46", true).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    assert_eq!(raw_ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(), ids);
    Ok(())
}

fn load(spec: FileSpec) -> Result<Dataset, DataError> {
    Dataset::load(&DataSpec::Jsonl(spec), 0)
}

/// All training problems of a file dataset, in file order (ids are `<stem>:<row>`).
fn rows(data: &Dataset) -> Vec<Problem> {
    let mut all: Vec<Problem> = (0..data.train_len().unwrap() as u64).map(|i| data.train(i)).collect();
    all.sort_by_key(|p| p.id.rsplit(':').next().unwrap().parse::<usize>().unwrap());
    all
}

#[test]
fn gsm8k_maps_question_answer_and_reference() -> Result<()> {
    let data = load(jsonl("gsm8k.jsonl", Some(FileFormat::Gsm8k)))?;
    let problems = rows(&data);
    assert_eq!(problems.len(), 3);
    let p = &problems[0];
    assert_eq!(p.id, "gsm8k:1");
    assert_eq!(p.prompt, "Mia has 12 apples and buys 7 more. How many apples does she have?");
    assert_eq!(p.task.answer.as_deref(), Some("19"));
    assert_eq!(p.reference.as_deref(), Some("She has 12 + 7 = 19 apples.\n#### 19"));
    assert_eq!(problems[2].task.answer.as_deref(), Some("-15"));
    let verifier = MathVerifier::default();
    for p in &problems {
        assert_eq!(verifier.verify(&p.task, p.reference.as_deref().unwrap())?.outcome, Outcome::Correct);
    }
    Ok(())
}

#[test]
fn math_and_deepscaler_answers() -> Result<()> {
    let template = "Solve and box the answer.\n{prompt}\n".to_string();
    let spec = FileSpec { prompt_template: template, ..jsonl("math.jsonl", Some(FileFormat::Math)) };
    let math = rows(&load(spec)?);
    assert_eq!(math[0].prompt, "Solve and box the answer.\nCompute $\\frac{2}{4}$ in lowest terms.\n");
    assert_eq!(math[0].task.prompt.as_deref(), Some(math[0].prompt.as_str()));
    assert_eq!(math[0].task.answer.as_deref(), Some("\\frac{1}{2}"));
    assert_eq!(math[1].task.answer.as_deref(), Some("3"), "the last box");
    assert!(math[1].reference.as_deref().unwrap().starts_with("First $\\boxed{-3}$"));
    let deep = rows(&load(jsonl("deepscaler.jsonl", Some(FileFormat::Deepscaler)))?);
    assert_eq!(deep[0].task.answer.as_deref(), Some("10"));
    assert_eq!(deep[0].reference.as_deref(), Some("2 + 3 + 5 = 10."));
    assert_eq!(deep[1].task.answer.as_deref(), Some("6"), "a numeric answer is written out");
    assert_eq!(deep[1].reference, None);
    Ok(())
}

#[test]
fn code_formats_map_to_tests() -> Result<()> {
    let he = rows(&load(jsonl("humaneval.jsonl", Some(FileFormat::Humaneval)))?);
    let p = &he[0];
    assert!(p.prompt.starts_with("def add_one(x):"));
    let tests = p.task.tests.as_ref().unwrap();
    assert_eq!(tests.entry_point.as_deref(), Some("add_one"));
    assert!(tests.assert.as_deref().unwrap().starts_with("def check(candidate):"));
    assert!(tests.stdio.is_empty() && p.task.answer.is_none());
    assert_eq!(p.reference.as_deref(), Some(format!("```python\n{}    return x + 1\n```", p.prompt).as_str()));

    let apps = load(jsonl("apps.jsonl", Some(FileFormat::Apps)))?;
    assert_eq!(apps.skipped(), 1, "the call-based row");
    let apps = rows(&apps);
    assert_eq!(apps.len(), 2);
    let case = |input: &str, output: &str| StdioCase { input: input.into(), output: output.into() };
    assert_eq!(apps[0].task.tests.as_ref().unwrap().stdio, [case("1 2\n", "3\n"), case("10 -3\n", "7\n")]);
    assert_eq!(apps[1].id, "apps:3");
    assert_eq!(apps[1].task.tests.as_ref().unwrap().stdio, [case("ab\n", "ab\nab\n"), case("x\ny\n", "x\nx\n")]);

    let mbpp = FileSpec {
        prompt_field: Some("text".into()),
        tests_field: Some("test_list".into()),
        ..jsonl("mbpp.jsonl", None)
    };
    let mbpp = rows(&load(mbpp)?);
    let expected =
        CodeTests { assert: Some("assert square(2) == 4\nassert square(-3) == 9".into()), ..Default::default() };
    assert_eq!(mbpp[0].task.tests.as_ref(), Some(&expected));
    assert_eq!(mbpp[0].task.answer, None);
    Ok(())
}

#[test]
fn file_errors_name_file_line_and_field() {
    let err = load(jsonl("gsm8k_missing.jsonl", Some(FileFormat::Gsm8k))).unwrap_err();
    assert!(matches!(&err, DataError::MissingField { at: RowRef::Line(2), field, .. } if field == "answer"), "{err}");
    let message = err.to_string();
    assert!(message.contains("gsm8k_missing.jsonl") && message.contains("line 2") && message.contains("`answer`"));

    let err = load(jsonl("gsm8k_bad_json.jsonl", Some(FileFormat::Gsm8k))).unwrap_err();
    assert!(matches!(err, DataError::Json { at: RowRef::Line(3), .. }), "{err}");
    assert!(err.to_string().contains("gsm8k_bad_json.jsonl line 3: invalid JSON"), "{err}");

    let err = load(jsonl("math_no_box.jsonl", Some(FileFormat::Math))).unwrap_err();
    assert!(matches!(&err, DataError::BadField { at: RowRef::Line(1), field, .. } if field == "solution"), "{err}");

    let spec = FileSpec { prompt_field: Some("prompt".into()), ..jsonl("gsm8k.jsonl", Some(FileFormat::Gsm8k)) };
    let err = load(spec).unwrap_err();
    assert!(err.to_string().contains("gsm8k.jsonl line 1: missing field `prompt`"), "{err}");

    let err = load(jsonl("no_such_file.jsonl", None)).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("no_such_file.jsonl"), "{err}");
}

/// A generic file of `n` rows `{"prompt": "q<i>", "answer": "<i>", "doc": "d<i>"}`.
fn numbered(dir: &Path, name: &str, n: usize) -> Result<PathBuf> {
    let path = dir.join(name);
    let lines: Vec<String> = (1..=n)
        .map(|i| {
            serde_json::json!({"prompt": format!("q{i}"), "answer": i.to_string(), "doc": format!("d{i}")}).to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n")?;
    Ok(path)
}

#[test]
fn file_order_is_a_seeded_permutation_per_epoch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let spec = DataSpec::Jsonl(FileSpec::new(numbered(dir.path(), "rows.jsonl", 37)?));
    let (a, b, c) = (Dataset::load(&spec, 5)?, Dataset::load(&spec, 5)?, Dataset::load(&spec, 6)?);
    assert_eq!(a.train_len(), Some(37));
    let epoch = |d: &Dataset, e: u64| (e * 37..(e + 1) * 37).map(|i| d.train(i).id).collect::<Vec<_>>();
    let first = epoch(&a, 0);
    let all: HashSet<&String> = first.iter().collect();
    assert_eq!(all.len(), 37, "an epoch visits every row once");
    assert_eq!(first, epoch(&b, 0));
    assert_ne!(first, epoch(&a, 1), "each epoch has its own order");
    assert_eq!(epoch(&a, 1).iter().collect::<HashSet<_>>(), all);
    assert_ne!(first, epoch(&c, 0), "the seed changes the order");
    assert_ne!(first, (1..=37).map(|i| format!("rows:{i}")).collect::<Vec<_>>(), "shuffled");
    Ok(())
}

#[test]
fn held_out_split_and_test_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let train = numbered(dir.path(), "rows.jsonl", 30)?;
    let spec = DataSpec::Jsonl(FileSpec { held_out: 8, ..FileSpec::new(&train) });
    let (a, b) = (Dataset::load(&spec, 1)?, Dataset::load(&spec, 1)?);
    assert_eq!((a.train_len(), a.held_out().len()), (Some(22), 8));
    assert_eq!(a.held_out(), b.held_out());
    let held: HashSet<&str> = a.held_out().iter().map(|p| p.id.as_str()).collect();
    let trained: HashSet<String> = (0..22).map(|i| a.train(i).id).collect();
    assert_eq!(trained.len(), 22);
    assert!(trained.iter().all(|id| !held.contains(id.as_str())));
    let other = Dataset::load(&spec, 2)?;
    assert_ne!(a.held_out(), other.held_out(), "the split depends on the seed");

    let test = numbered(dir.path(), "test.jsonl", 5)?;
    let spec = FileSpec { test: Some(test), text_field: Some("doc".into()), ..FileSpec::new(&train) };
    let data = Dataset::load(&DataSpec::Jsonl(spec.clone()), 1)?;
    assert_eq!((data.train_len(), data.held_out().len()), (Some(30), 5));
    assert_eq!(data.held_out()[0].id, "test:1");
    let data3 = Dataset::load(&DataSpec::Jsonl(FileSpec { held_out: 3, ..spec }), 1)?;
    assert_eq!(data3.held_out(), &data.held_out()[..3]);
    for i in 0..60 {
        let p = data.train(i);
        assert_eq!(data.pretrain_text(i), format!("d{}", p.task.answer.unwrap()), "text_field follows train order");
    }
    let too_many = DataSpec::Jsonl(FileSpec { held_out: 30, ..FileSpec::new(&train) });
    assert!(matches!(Dataset::load(&too_many, 0), Err(DataError::Spec { field: "held_out", .. })));
    Ok(())
}

#[test]
fn pretrain_text_defaults() -> Result<()> {
    let data = Dataset::load(&arithmetic(1, 2, 2, &["+", "-"], 10), 4)?;
    for i in 0..20 {
        let p = data.train(i);
        assert_eq!(data.pretrain_text(i), format!("{}{}", p.prompt, p.reference.unwrap()));
    }
    let data = load(jsonl("gsm8k.jsonl", Some(FileFormat::Gsm8k)))?;
    let p = data.train(0);
    assert_eq!(data.pretrain_text(0), format!("{}\n{}", p.prompt, p.reference.unwrap()));
    Ok(())
}

/// Writes the rows of gsm8k.jsonl as a Parquet file with two string columns.
fn write_gsm8k_parquet(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(fixture("gsm8k.jsonl"))?;
    let rows: Vec<serde_json::Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let column =
        |name: &str| -> Vec<ByteArray> { rows.iter().map(|r| ByteArray::from(r[name].as_str().unwrap())).collect() };
    let schema = "message gsm8k { REQUIRED BYTE_ARRAY question (UTF8); REQUIRED BYTE_ARRAY answer (UTF8); }";
    let mut writer =
        SerializedFileWriter::new(File::create(path)?, Arc::new(parse_message_type(schema)?), Default::default())?;
    let mut group = writer.next_row_group()?;
    for name in ["question", "answer"] {
        let mut col = group.next_column()?.unwrap();
        col.typed::<ByteArrayType>().write_batch(&column(name), None, None)?;
        col.close()?;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}

#[test]
fn parquet_gives_the_same_problems_as_jsonl() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gsm8k.parquet");
    write_gsm8k_parquet(&path)?;
    let from_parquet =
        Dataset::load(&DataSpec::Parquet(FileSpec { format: Some(FileFormat::Gsm8k), ..FileSpec::new(&path) }), 9)?;
    let from_jsonl = Dataset::load(&DataSpec::Jsonl(jsonl("gsm8k.jsonl", Some(FileFormat::Gsm8k))), 9)?;
    assert_eq!(from_parquet.train_len(), Some(3));
    for i in 0..6 {
        assert_eq!(from_parquet.train(i), from_jsonl.train(i));
    }
    let err = Dataset::load(&DataSpec::Parquet(FileSpec { format: Some(FileFormat::Math), ..FileSpec::new(&path) }), 0)
        .unwrap_err();
    assert!(matches!(&err, DataError::MissingField { at: RowRef::Row(1), field, .. } if field == "problem"), "{err}");
    assert!(err.to_string().contains("gsm8k.parquet row 1: missing field `problem`"), "{err}");
    Ok(())
}

/// Two rows with int, double, list and struct columns, as Parquet and as the equivalent JSONL.
fn write_mixed(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let schema = "message mixed {
        REQUIRED BYTE_ARRAY prompt (UTF8);
        REQUIRED INT64 answer;
        REQUIRED DOUBLE weight;
        OPTIONAL group test_list (LIST) { REPEATED group list { OPTIONAL BYTE_ARRAY element (UTF8); } }
        REQUIRED group tests { REQUIRED BYTE_ARRAY assert (UTF8); REQUIRED BYTE_ARRAY entry_point (UTF8); }
    }";
    let parquet = dir.join("mixed.parquet");
    let mut writer =
        SerializedFileWriter::new(File::create(&parquet)?, Arc::new(parse_message_type(schema)?), Default::default())?;
    let mut group = writer.next_row_group()?;
    let strings = |v: &[&str]| v.iter().map(|s| ByteArray::from(*s)).collect::<Vec<_>>();
    let mut col = group.next_column()?.unwrap();
    col.typed::<ByteArrayType>().write_batch(&strings(&["p1", "p2"]), None, None)?;
    col.close()?;
    let mut col = group.next_column()?.unwrap();
    col.typed::<Int64Type>().write_batch(&[42, -7], None, None)?;
    col.close()?;
    let mut col = group.next_column()?.unwrap();
    col.typed::<DoubleType>().write_batch(&[0.5, 2.25], None, None)?;
    col.close()?;
    // Row 1: ["assert f(1) == 2", "assert f(2) == 3"]; row 2: ["assert f(0) == 1"].
    let mut col = group.next_column()?.unwrap();
    let items = strings(&["assert f(1) == 2", "assert f(2) == 3", "assert f(0) == 1"]);
    col.typed::<ByteArrayType>().write_batch(&items, Some(&[3, 3, 3][..]), Some(&[0, 1, 0][..]))?;
    col.close()?;
    for values in [["def check(c):\n    assert c(1) == 2", "def check(c):\n    assert c(0) == 1"], ["f", "g"]] {
        let mut col = group.next_column()?.unwrap();
        col.typed::<ByteArrayType>().write_batch(&strings(&values), None, None)?;
        col.close()?;
    }
    group.close()?;
    writer.close()?;
    let jsonl = dir.join("mixed.jsonl");
    let rows = [
        serde_json::json!({"prompt": "p1", "answer": 42, "weight": 0.5,
            "test_list": ["assert f(1) == 2", "assert f(2) == 3"],
            "tests": {"assert": "def check(c):\n    assert c(1) == 2", "entry_point": "f"}}),
        serde_json::json!({"prompt": "p2", "answer": -7, "weight": 2.25, "test_list": ["assert f(0) == 1"],
            "tests": {"assert": "def check(c):\n    assert c(0) == 1", "entry_point": "g"}}),
    ];
    std::fs::write(&jsonl, rows.map(|r| r.to_string()).join("\n"))?;
    Ok((parquet, jsonl))
}

#[test]
fn parquet_converts_ints_doubles_lists_and_structs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (parquet, jsonl) = write_mixed(dir.path())?;
    let field = |s: &str| Some(s.to_string());
    let specs = [
        FileSpec { answer_field: field("answer"), tests_field: field("test_list"), ..FileSpec::new("") },
        FileSpec { answer_field: field("weight"), tests_field: field("tests"), ..FileSpec::new("") },
    ];
    let mut seen = Vec::new();
    for spec in specs {
        let from_parquet =
            rows(&Dataset::load(&DataSpec::Parquet(FileSpec { train: parquet.clone(), ..spec.clone() }), 0)?);
        let from_jsonl = rows(&Dataset::load(&DataSpec::Jsonl(FileSpec { train: jsonl.clone(), ..spec }), 0)?);
        assert_eq!(from_parquet, from_jsonl);
        seen.push(from_parquet);
    }
    assert_eq!(seen[0][0].task.answer.as_deref(), Some("42"));
    assert_eq!(seen[0][1].task.answer.as_deref(), Some("-7"));
    assert_eq!(seen[0][0].task.tests.as_ref().unwrap().assert.as_deref(), Some("assert f(1) == 2\nassert f(2) == 3"));
    assert_eq!(seen[1][1].task.answer.as_deref(), Some("2.25"));
    let tests = seen[1][1].task.tests.as_ref().unwrap();
    assert_eq!(
        (tests.assert.as_deref(), tests.entry_point.as_deref()),
        (Some("def check(c):\n    assert c(0) == 1"), Some("g"))
    );
    Ok(())
}

/// verl rows (chat-message prompts, `reward_model.ground_truth`, `data_source`, `extra_info`) map
/// with the layout given or detected; prompts are rendered by the chat template without the bos
/// text; `chat = "always"` wraps text prompts, `"never"` refuses messages.
#[test]
fn verl_rows_render_chat_prompts() -> Result<()> {
    use rlvr_rollout::template::{ChatRenderer, ChatTemplate};
    use rlvr_trainer::data::ChatMode;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("verl.jsonl");
    let row = serde_json::json!({
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "5"},
        "extra_info": {"split": "train", "index": 0},
    });
    std::fs::write(&path, format!("{row}\n"))?;
    let template = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    let specials = [("bos_token".to_string(), "<s>".to_string())].into_iter().collect();
    let chat = ChatRenderer::Template(Box::new(ChatTemplate::new(template, specials)?));
    for format in [FileFormat::Verl, FileFormat::Auto] {
        let spec = FileSpec { format: Some(format), prompt_template: "Q: {prompt}".into(), ..FileSpec::new(&path) };
        let data = Dataset::load_with(&DataSpec::Jsonl(spec), 0, Some(&chat))?;
        let p = data.train(0);
        assert_eq!(p.prompt, "<system>Be brief.<user>Q: What is 2+3?<assistant>");
        assert_eq!(p.task.answer.as_deref(), Some("5"));
        assert_eq!(p.task.prompt.as_deref(), Some("Q: What is 2+3?"), "the task's prompt is the question");
        assert_eq!(p.task.extra["data_source"], "openai/gsm8k");
        assert_eq!(p.task.extra["extra_info"]["split"], "train");
        assert_eq!(p.reference, None);
    }
    // Without the model's chat encoding, chat messages are an error naming the row and field.
    let spec = FileSpec { format: Some(FileFormat::Verl), ..FileSpec::new(&path) };
    let err = Dataset::load(&DataSpec::Jsonl(spec.clone()), 0).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("`prompt`") && err.contains("chat template"), "{err}");
    let never = FileSpec { chat: ChatMode::Never, ..spec };
    let err = Dataset::load_with(&DataSpec::Jsonl(never), 0, Some(&chat)).unwrap_err().to_string();
    assert!(err.contains("never"), "{err}");
    // GSM8K text prompts through the template with chat = "always"; the layout detected.
    let always = FileSpec { format: Some(FileFormat::Auto), chat: ChatMode::Always, ..jsonl("gsm8k.jsonl", None) };
    let data = Dataset::load_with(&DataSpec::Jsonl(always), 0, Some(&chat))?;
    let plain = load(jsonl("gsm8k.jsonl", Some(FileFormat::Gsm8k)))?;
    let (a, b) = (rows(&data), rows(&plain));
    assert_eq!(a[0].prompt, format!("<user>{}<assistant>", b[0].prompt));
    assert_eq!((a[0].task.answer.clone(), a[0].reference.clone()), (b[0].task.answer.clone(), b[0].reference.clone()));
    Ok(())
}

/// The layout a row's fields show.
#[test]
fn formats_are_detected_from_fields() {
    let detect = |v: serde_json::Value| FileFormat::detect(v.as_object().unwrap());
    use serde_json::json;
    assert_eq!(detect(json!({"question": "q", "answer": "a #### 1"})), Some(FileFormat::Gsm8k));
    assert_eq!(detect(json!({"problem": "p", "solution": "\\boxed{1}"})), Some(FileFormat::Math));
    assert_eq!(detect(json!({"problem": "p", "answer": "1", "solution": "s"})), Some(FileFormat::Deepscaler));
    assert_eq!(detect(json!({"prompt": "def f", "test": "t", "entry_point": "f"})), Some(FileFormat::Humaneval));
    assert_eq!(detect(json!({"question": "q", "input_output": "{}"})), Some(FileFormat::Apps));
    assert_eq!(detect(json!({"prompt": [], "reward_model": {}})), Some(FileFormat::Verl));
    assert_eq!(detect(json!({"prompt": "p", "answer": "1"})), None);
}
