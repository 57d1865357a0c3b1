//! dsum-wasm: dsum in the browser. A thin wasm-bindgen layer over the same dsum-core types
//! the CLI uses: ROUGE scoring of two CSVs ([`score`]) and summarization with a model loaded
//! from the user's files ([`summarize`]). The page (`web/`) runs it inside a Web Worker;
//! arguments and results cross the boundary as bytes and JSON strings, errors as `Error`s
//! whose message names the file and what is wrong.

pub mod score;
pub mod summarize;

#[cfg(target_arch = "wasm32")]
mod bindings {
    use std::cell::RefCell;
    use std::sync::Arc;

    use dsum_core::mecab::Mecab;
    use dsum_core::models::LoadedModel;
    use dsum_core::rouge::Tokenize;
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = console, js_name = error)]
        fn console_error(s: &str);
    }

    thread_local! {
        /// The Mecab-ko analyzer built from the dictionary files the user dropped.
        static MECAB: RefCell<Option<Arc<Mecab>>> = const { RefCell::new(None) };
    }

    /// A Rust panic aborts the module: say why on the console before it does, so the worker
    /// can report it (and restart) instead of failing silently.
    #[wasm_bindgen(start)]
    pub fn start() {
        std::panic::set_hook(Box::new(|info| {
            console_error(&format!("dsum-wasm: {info}"))
        }));
    }

    fn js_err(e: anyhow::Error) -> JsError {
        JsError::new(&format!("{e:#}"))
    }

    /// dsum-wasm's version.
    #[wasm_bindgen]
    pub fn version() -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// ROUGE of a predictions CSV against a references CSV; `options` is a JSON object
    /// (`flavor`, `tokenize`, `multi_ref`, `empty`, `worst`). Returns the report as JSON.
    #[wasm_bindgen]
    pub fn score(
        pred_name: &str,
        pred: &[u8],
        ref_name: &str,
        reference: &[u8],
        options: &str,
    ) -> Result<String, JsError> {
        let opts: crate::score::ScoreOptions = serde_json::from_str(options)
            .map_err(|e| JsError::new(&format!("score options: {e}")))?;
        let mecab = MECAB.with(|m| m.borrow().clone()).map(|m| {
            let t: Tokenize = Tokenize::custom(move |s| m.morphs(s));
            t
        });
        let v = crate::score::score_csv(pred_name, pred, ref_name, reference, &opts, mecab)
            .map_err(js_err)?;
        Ok(v.to_string())
    }

    /// Builds the Mecab-ko analyzer from the compiled mecab-ko-dic files.
    #[wasm_bindgen]
    pub fn load_mecab(
        sys_dic: Vec<u8>,
        matrix_bin: Vec<u8>,
        char_bin: Vec<u8>,
        unk_dic: Vec<u8>,
        dicrc: Vec<u8>,
    ) -> Result<(), JsError> {
        let dicrc = String::from_utf8(dicrc).map_err(|_| JsError::new("dicrc: not UTF-8 text"))?;
        let m = Mecab::from_bytes(sys_dic, matrix_bin, char_bin, unk_dic, &dicrc)
            .map_err(|e| JsError::new(&format!("mecab-ko-dic: {e}")))?;
        MECAB.with(|cell| *cell.borrow_mut() = Some(Arc::new(m)));
        Ok(())
    }

    /// Mecab-ko morphemes of `text` as a JSON list (needs [`load_mecab`] first).
    #[wasm_bindgen]
    pub fn morphs(text: &str) -> Result<String, JsError> {
        MECAB.with(|m| match &*m.borrow() {
            Some(m) => Ok(serde_json::Value::from(m.morphs(text)).to_string()),
            None => Err(JsError::new("load the mecab-ko-dic files first")),
        })
    }

    /// The rows of a dialogues CSV (`fname`, `dialogue`) as a JSON list.
    #[wasm_bindgen]
    pub fn dialogues(name: &str, bytes: &[u8]) -> Result<String, JsError> {
        let v = crate::summarize::read_dialogues(name, bytes).map_err(js_err)?;
        Ok(v.to_string())
    }

    /// A loaded model.
    #[wasm_bindgen]
    pub struct Summarizer {
        model: LoadedModel,
    }

    #[wasm_bindgen]
    impl Summarizer {
        /// `names[i]` is the file name of `files[i]` (a `Uint8Array`): one `.gguf`, or a
        /// model folder's files. `name` is what errors call the model.
        #[wasm_bindgen(constructor)]
        pub fn new(
            name: &str,
            names: Vec<String>,
            files: js_sys::Array,
        ) -> Result<Summarizer, JsError> {
            if names.len() != files.length() as usize {
                return Err(JsError::new("names and files differ in length"));
            }
            let mut list = Vec::with_capacity(names.len());
            for (n, f) in names.into_iter().zip(files.iter()) {
                let bytes = js_sys::Uint8Array::new(&f).to_vec();
                list.push((n, bytes));
            }
            let model = crate::summarize::load(name, list).map_err(js_err)?;
            Ok(Summarizer { model })
        }

        /// The model's family, size and generation defaults, as JSON.
        pub fn info(&self) -> String {
            crate::summarize::info(&self.model).to_string()
        }

        /// Summarizes `dialogue`; `options` is JSON (see `SummarizeOptions`); `on_token` is
        /// called with `(token id, decoded text so far)` for each greedy token.
        pub fn summarize(
            &self,
            dialogue: &str,
            options: &str,
            on_token: &js_sys::Function,
        ) -> Result<String, JsError> {
            let opts: crate::summarize::SummarizeOptions = serde_json::from_str(options)
                .map_err(|e| JsError::new(&format!("generation settings: {e}")))?;
            let mut cb = |id: u32, text: &str| {
                // A failing callback (the page went away) must not stop the generation.
                let _ = on_token.call2(&JsValue::NULL, &JsValue::from(id), &JsValue::from(text));
            };
            let v = crate::summarize::summarize(&self.model, dialogue, &opts, &mut cb)
                .map_err(js_err)?;
            Ok(v.to_string())
        }
    }
}
