#!/usr/bin/env python3
"""Build a SageMaker-style MXNet image-classification model with MXNet itself, save it as a
Module checkpoint and model.tar.gz, and write MXNet's forward-pass probabilities for images.

The network is MXNet's own ResNet symbol, the one SageMaker's built-in image classifier
trains: `resnet()` / `residual_unit()` below are copied from MXNet 1.x
`example/image-classification/symbols/resnet.py` (Apache License 2.0, (c) The Apache
Software Foundation; "Adapted from https://github.com/tornadomeet/ResNet", original author
Wei Wu), unchanged. `get_symbol()` is MXNet's, with one addition: `--width-divisor` divides
its filter list, for small test fixtures with the same structure (pre-activation units
`stageN_unitM_*`, `bn_data`, `conv0`, `bn1`, `fc1`, `softmax`).

Weights are random; BatchNorm statistics are calibrated on the images (one training-mode
forward/backward pass with momentum 0) and then perturbed, so that every BatchNorm matters and
`bn_data` normalises raw 0-255 pixels the way a trained model's does. `bn_data`'s stored
gamma is random, which a reader must ignore (fix_gamma=True).

Images must already be C x H x W in size (PNG), so that no resize differs between readers:
the pixels MXNet sees here are exactly the decoded file, RGB, float 0-255, CHW.

Writes into OUT: NAME-symbol.json, NAME-NNNN.params, model-shapes.json, model.tar.gz (the
three, like SageMaker's artefact) and expected.json ({"images": [...], "probabilities": [...]}).

Usage: make_mxnet_fixtures.py OUT --num-layers 18 --image-shape 3,48,48 --classes 5
       [--width-divisor 16] [--epoch 3] [--seed 7] IMAGE...
"""
import argparse
import json
import os
import tarfile

os.environ.setdefault('MXNET_SUBGRAPH_BACKEND', 'NONE')  # plain operators, not MKLDNN fusions
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


# --- MXNet example/image-classification/symbols/resnet.py (Apache-2.0), unchanged -----------
def residual_unit(data, num_filter, stride, dim_match, name, bottle_neck=True, bn_mom=0.9, workspace=256, memonger=False):
    if bottle_neck:
        bn1 = mx.sym.BatchNorm(data=data, fix_gamma=False, eps=2e-5, momentum=bn_mom, name=name + '_bn1')
        act1 = mx.sym.Activation(data=bn1, act_type='relu', name=name + '_relu1')
        conv1 = mx.sym.Convolution(data=act1, num_filter=int(num_filter*0.25), kernel=(1,1), stride=(1,1), pad=(0,0),
                                   no_bias=True, workspace=workspace, name=name + '_conv1')
        bn2 = mx.sym.BatchNorm(data=conv1, fix_gamma=False, eps=2e-5, momentum=bn_mom, name=name + '_bn2')
        act2 = mx.sym.Activation(data=bn2, act_type='relu', name=name + '_relu2')
        conv2 = mx.sym.Convolution(data=act2, num_filter=int(num_filter*0.25), kernel=(3,3), stride=stride, pad=(1,1),
                                   no_bias=True, workspace=workspace, name=name + '_conv2')
        bn3 = mx.sym.BatchNorm(data=conv2, fix_gamma=False, eps=2e-5, momentum=bn_mom, name=name + '_bn3')
        act3 = mx.sym.Activation(data=bn3, act_type='relu', name=name + '_relu3')
        conv3 = mx.sym.Convolution(data=act3, num_filter=num_filter, kernel=(1,1), stride=(1,1), pad=(0,0), no_bias=True,
                                   workspace=workspace, name=name + '_conv3')
        if dim_match:
            shortcut = data
        else:
            shortcut = mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(1,1), stride=stride, no_bias=True,
                                            workspace=workspace, name=name+'_sc')
        if memonger:
            shortcut._set_attr(mirror_stage='True')
        return conv3 + shortcut
    else:
        bn1 = mx.sym.BatchNorm(data=data, fix_gamma=False, momentum=bn_mom, eps=2e-5, name=name + '_bn1')
        act1 = mx.sym.Activation(data=bn1, act_type='relu', name=name + '_relu1')
        conv1 = mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(3,3), stride=stride, pad=(1,1),
                                      no_bias=True, workspace=workspace, name=name + '_conv1')
        bn2 = mx.sym.BatchNorm(data=conv1, fix_gamma=False, momentum=bn_mom, eps=2e-5, name=name + '_bn2')
        act2 = mx.sym.Activation(data=bn2, act_type='relu', name=name + '_relu2')
        conv2 = mx.sym.Convolution(data=act2, num_filter=num_filter, kernel=(3,3), stride=(1,1), pad=(1,1),
                                      no_bias=True, workspace=workspace, name=name + '_conv2')
        if dim_match:
            shortcut = data
        else:
            shortcut = mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(1,1), stride=stride, no_bias=True,
                                            workspace=workspace, name=name+'_sc')
        if memonger:
            shortcut._set_attr(mirror_stage='True')
        return conv2 + shortcut


def resnet(units, num_stages, filter_list, num_classes, image_shape, bottle_neck=True, bn_mom=0.9, workspace=256, dtype='float32', memonger=False):
    num_unit = len(units)
    assert(num_unit == num_stages)
    data = mx.sym.Variable(name='data')
    if dtype == 'float32':
        data = mx.sym.identity(data=data, name='id')
    else:
        if dtype == 'float16':
            data = mx.sym.Cast(data=data, dtype=np.float16)
    data = mx.sym.BatchNorm(data=data, fix_gamma=True, eps=2e-5, momentum=bn_mom, name='bn_data')
    (nchannel, height, width) = image_shape
    if height <= 32:            # such as cifar10
        body = mx.sym.Convolution(data=data, num_filter=filter_list[0], kernel=(3, 3), stride=(1,1), pad=(1, 1),
                                  no_bias=True, name="conv0", workspace=workspace)
    else:                       # often expected to be 224 such as imagenet
        body = mx.sym.Convolution(data=data, num_filter=filter_list[0], kernel=(7, 7), stride=(2,2), pad=(3, 3),
                                  no_bias=True, name="conv0", workspace=workspace)
        body = mx.sym.BatchNorm(data=body, fix_gamma=False, eps=2e-5, momentum=bn_mom, name='bn0')
        body = mx.sym.Activation(data=body, act_type='relu', name='relu0')
        body = mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2,2), pad=(1,1), pool_type='max')

    for i in range(num_stages):
        body = residual_unit(body, filter_list[i+1], (1 if i==0 else 2, 1 if i==0 else 2), False,
                             name='stage%d_unit%d' % (i + 1, 1), bottle_neck=bottle_neck, workspace=workspace,
                             memonger=memonger)
        for j in range(units[i]-1):
            body = residual_unit(body, filter_list[i+1], (1,1), True, name='stage%d_unit%d' % (i + 1, j + 2),
                                 bottle_neck=bottle_neck, workspace=workspace, memonger=memonger)
    bn1 = mx.sym.BatchNorm(data=body, fix_gamma=False, eps=2e-5, momentum=bn_mom, name='bn1')
    relu1 = mx.sym.Activation(data=bn1, act_type='relu', name='relu1')
    # Although kernel is not used here when global_pool=True, we should put one
    pool1 = mx.sym.Pooling(data=relu1, global_pool=True, kernel=(7, 7), pool_type='avg', name='pool1')
    flat = mx.sym.Flatten(data=pool1)
    fc1 = mx.sym.FullyConnected(data=flat, num_hidden=num_classes, name='fc1')
    if dtype == 'float16':
        fc1 = mx.sym.Cast(data=fc1, dtype=np.float32)
    return mx.sym.SoftmaxOutput(data=fc1, name='softmax')
# --- end of the copy ------------------------------------------------------------------------


def get_symbol(num_classes, num_layers, image_shape, width_divisor=1, bn_mom=0.9):
    """MXNet's get_symbol (same depth tables), with the filter list divided by width_divisor."""
    (nchannel, height, width) = image_shape
    if height <= 28:
        num_stages = 3
        if (num_layers-2) % 9 == 0 and num_layers >= 164:
            per_unit = [(num_layers-2)//9]
            filter_list = [16, 64, 128, 256]
            bottle_neck = True
        elif (num_layers-2) % 6 == 0 and num_layers < 164:
            per_unit = [(num_layers-2)//6]
            filter_list = [16, 16, 32, 64]
            bottle_neck = False
        else:
            raise ValueError("no experiments done on num_layers {}".format(num_layers))
        units = per_unit * num_stages
    else:
        if num_layers >= 50:
            filter_list = [64, 256, 512, 1024, 2048]
            bottle_neck = True
        else:
            filter_list = [64, 64, 128, 256, 512]
            bottle_neck = False
        num_stages = 4
        units = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                 152: [3, 8, 36, 3], 200: [3, 24, 36, 3], 269: [3, 30, 48, 8]}[num_layers]
    filter_list = [max(1, f // width_divisor) for f in filter_list]
    return resnet(units=units, num_stages=num_stages, filter_list=filter_list, num_classes=num_classes,
                  image_shape=image_shape, bottle_neck=bottle_neck, bn_mom=bn_mom)


def load_images(paths, shape):
    c, h, w = shape
    out = []
    for p in paths:
        img = Image.open(p).convert('RGB')
        if img.size != (w, h):
            raise SystemExit('%s is %dx%d, the model takes %dx%d' % (p, img.size[0], img.size[1], w, h))
        out.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1))
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('images', nargs='+')
    ap.add_argument('--num-layers', type=int, default=18)
    ap.add_argument('--image-shape', default='3,224,224')
    ap.add_argument('--classes', type=int, default=5)
    ap.add_argument('--width-divisor', type=int, default=1)
    ap.add_argument('--epoch', type=int, default=3)
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--prefix', default='image-classification')
    a = ap.parse_args()
    shape = tuple(int(x) for x in a.image_shape.split(','))
    rng = np.random.RandomState(a.seed)
    x = load_images(a.images, shape)
    n = len(x)

    # Random weights (He-normal convolutions), then BatchNorm statistics calibrated on the
    # images with a momentum-0 copy of the symbol (one training-mode pass sets them).
    calib = get_symbol(a.classes, a.num_layers, shape, a.width_divisor, bn_mom=0.0)
    sym = get_symbol(a.classes, a.num_layers, shape, a.width_divisor)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=(n,) + shape)
    args = {}
    for name, s in zip(sym.list_arguments(), arg_shapes):
        if name in ('data', 'softmax_label'):
            continue
        if name.endswith('_weight') and len(s) == 4:
            fan_in = s[1] * s[2] * s[3]
            args[name] = rng.normal(0, np.sqrt(2.0 / fan_in), s)
        elif name == 'fc1_weight':
            args[name] = rng.normal(0, 1.0 / np.sqrt(s[1]), s)
        elif name.endswith('_gamma'):
            args[name] = rng.uniform(0.5, 1.5, s)
        else:  # beta, fc1_bias
            args[name] = rng.normal(0, 0.2, s)
    auxs = {name: np.zeros(s) if 'mean' in name else np.ones(s)
            for name, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    to_nd = lambda d: {k: mx.nd.array(v, dtype='float32') for k, v in d.items()}
    mod = mx.mod.Module(calib, label_names=['softmax_label'], context=mx.cpu())
    mod.bind(data_shapes=[('data', (n,) + shape)], label_shapes=[('softmax_label', (n,))],
             for_training=True)
    mod.set_params(to_nd(args), to_nd(auxs), allow_missing=False)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)], [mx.nd.zeros((n,))]), is_train=True)
    mod.backward()  # MXNet's BatchNorm updates its moving statistics in the backward pass
    mx.nd.waitall()
    mod._params_dirty = True  # the forward pass updated the aux states on the device
    _, calibrated = mod.get_params()
    auxs = {}
    for k, v in calibrated.items():
        v = v.asnumpy().astype(np.float64)
        if k == 'bn_data_moving_mean':
            auxs[k] = v
        elif k == 'bn_data_moving_var':
            auxs[k] = v
        elif k.endswith('moving_mean'):
            var = calibrated[k.replace('moving_mean', 'moving_var')].asnumpy().astype(np.float64)
            auxs[k] = v + rng.normal(0, 0.2, v.shape) * np.sqrt(var + 1e-5)
        else:
            auxs[k] = v * rng.uniform(0.7, 1.4, v.shape)
    # Scale fc1 so that the logits spread by about 1.5 across classes and images:
    # probabilities neither uniform nor saturated.
    fc1 = sym.get_internals()['fc1_output']
    ex = fc1.bind(mx.cpu(), args=dict(to_nd(args), data=mx.nd.array(x)), aux_states=to_nd(auxs))
    logits = ex.forward(is_train=False)[0].asnumpy() - args['fc1_bias']
    scale = 1.5 / max(float(logits.std()), 1e-6)
    args['fc1_weight'] = args['fc1_weight'] * scale
    args = to_nd(args)
    auxs = to_nd(auxs)

    os.makedirs(a.out, exist_ok=True)
    prefix = os.path.join(a.out, a.prefix)
    mx.model.save_checkpoint(prefix, a.epoch, sym, args, auxs)
    shapes = [{'name': 'data', 'shape': [1] + list(shape)}]
    with open(os.path.join(a.out, 'model-shapes.json'), 'w') as f:
        json.dump(shapes, f)
    names = ['%s-symbol.json' % a.prefix, '%s-%04d.params' % (a.prefix, a.epoch), 'model-shapes.json']
    with tarfile.open(os.path.join(a.out, 'model.tar.gz'), 'w:gz') as t:
        for nm in names:
            t.add(os.path.join(a.out, nm), arcname=nm)

    # MXNet's forward pass of the saved checkpoint, as an endpoint would run it.
    sym2, arg2, aux2 = mx.model.load_checkpoint(prefix, a.epoch)
    pm = mx.mod.Module(sym2, label_names=None, context=mx.cpu())
    pm.bind(data_shapes=[('data', (n,) + shape)], for_training=False)
    pm.set_params(arg2, aux2, allow_missing=True)  # softmax_label: unused at inference
    pm.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    prob = pm.get_outputs()[0].asnumpy()
    with open(os.path.join(a.out, 'expected.json'), 'w') as f:
        json.dump({'images': [os.path.basename(p) for p in a.images],
                   'probabilities': [[float(v) for v in row] for row in prob]}, f, indent=1)
    print('%s: %d parameters, probabilities (max per image): %s' % (
        a.out, sum(v.size for v in list(args.values()) + list(auxs.values())),
        ' '.join('%.3f' % r.max() for r in prob)))


if __name__ == '__main__':
    main()
