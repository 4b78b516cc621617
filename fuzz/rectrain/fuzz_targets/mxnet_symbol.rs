//! MXNet's symbol JSON and the graph compiler (`resnet::mxnet::MxnetModel::from_files`:
//! `symbol::parse_symbol`, `graph::compile` with its shape inference and operator
//! checks), with the parameters of the committed SageMaker-style ResNet-18 fixture
//! (written by MXNet 1.9.1), so that mutations of its symbol reach deep into the
//! compiler. No panic; a graph that compiles runs (`net::GraphNet::forward` on the CPU) and
//! gives one finite-shaped row of logits per image.
#![no_main]

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use libfuzzer_sys::fuzz_target;
use resnet::mxnet::archive::{CheckpointFiles, Member};
use resnet::mxnet::{net, MxnetModel};

const PARAMS: &[u8] =
    include_bytes!("../../../tests/fixtures/mxnet/resnet18/image-classification-0003.params");

fn member(label: &str, bytes: Vec<u8>) -> Member {
    Member {
        label: label.into(),
        bytes,
    }
}

fuzz_target!(|data: &[u8]| {
    static PARAMS_MEMBER: OnceLock<Member> = OnceLock::new();
    let files = CheckpointFiles {
        symbol: member("fuzz-symbol.json", data.to_vec()),
        params: PARAMS_MEMBER
            .get_or_init(|| member("fixture.params", PARAMS.to_vec()))
            .clone(),
        shapes: None,
    };
    let Ok(model) = MxnetModel::from_files(&files) else {
        return;
    };
    let [c, h, w] = model.image_shape();
    // Running is the costly part: only for inputs up to the fixture's size.
    if c * h * w > 3 * 64 * 64 {
        return;
    }
    let device = Default::default();
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(vec![0.5f32; c * h * w], [1, c, h, w]), &device);
    let logits = net::GraphNet::<Flex>::new(&model.plan, &device).forward(x);
    assert_eq!(logits.dims(), [1, model.num_classes()]);
});
